# frozen_string_literal: true

require_relative 'test_helper'

# Convergent::Rollout and the client's rollout calls, against the real
# binary and the file store of test/fixtures/views/tiers.yml, whose nodes
# test/fixtures/rollout-node simulates (a plan's kick runs it).
class RolloutTest < Minitest::Test
  include ConvergentTest::Sandbox

  NODE_SCRIPT = File.join(ConvergentTest::VIEWS, '..', 'rollout-node')
  NODES = { 'db' => %w(db-01 db-02), 'web' => %w(web-01 web-02 web-03 web-04) }.freeze

  def setup
    super
    view('tiers')
    @node_env = { 'CONVERGENT_BIN' => ConvergentTest::BINARY, 'ROLLOUT_NODES_DIR' => path('nodes') }
    # Every node checks in once, so that it is a present member.
    NODES.each { |cluster, nodes| nodes.each { |n| simulate(cluster, n) } }
  end

  def simulate(cluster, node)
    shell = Mixlib::ShellOut.new(NODE_SCRIPT, store, cluster, node, environment: @node_env, timeout: 30)
    shell.run_command
    assert_equal 0, shell.exitstatus, shell.stderr
  end

  def store
    "file:#{path('view.yml')}"
  end

  # A plan: db to 5.1, then web by a canary and halves. The kick runs each
  # released node's simulated chef run (web's only with kick_web).
  def plan(name, kick_web: true, set: { 'version' => '2.5.0' })
    kick = { 'command' => [NODE_SCRIPT, store, '{cluster}', '{node}'] }
    db = { 'cluster' => 'db', 'set' => { 'version' => '5.1' }, 'kick' => kick }
    web = { 'cluster' => 'web', 'set' => set, 'strategy' => { 'canary' => 1, 'batch' => '50%' } }
    web['kick'] = kick if kick_web
    { 'name' => name, 'steps' => [db, web] }
  end

  def plan_file(name, document)
    file = path("#{name}.yml")
    Convergent::Rollout.write_plan(file, Convergent::Rollout.plan_text(name, document))
    file
  end

  def kicking_client
    client(environment: @node_env, command_timeout: 60)
  end

  def test_a_plan_runs_to_completion_and_its_progress_says_it_moved
    file = plan_file('web-2.5.0', plan('web-2.5.0'))
    before = Convergent::Rollout.progress(client, 'web-2.5.0')
    refute before.started?
    assert_equal 'not started', before.to_s

    out = kicking_client.rollout_run(file, options: { poll: '100ms' })
    assert_match(/plan web-2.5.0 completed/, out)
    after = Convergent::Rollout.progress(client, 'web-2.5.0')
    assert after.completed?
    refute_equal before, after
    assert_equal 'completed, 2/2 steps done', after.to_s
    assert_equal '2.5.0', YAML.safe_load(convergent!("--store=#{store}", 'get', 'clusters/web/desired'))['version']
    # Read again, nothing moved: the two readings are equal.
    assert_equal after, Convergent::Rollout.progress(client, 'web-2.5.0')
  end

  def test_a_stopped_orchestrator_leaves_the_plan_moved_and_a_second_run_resumes_it
    # No kick for web: its canary never checks in at the new state, so the
    # orchestrator waits until it is stopped.
    file = plan_file('web-2.6.0', plan('web-2.6.0', kick_web: false))
    before = Convergent::Rollout.progress(client, 'web-2.6.0')
    error = assert_raises(Convergent::TimeoutError) do
      kicking_client.rollout_run(file, options: { poll: '100ms' }, timeout: 4)
    end
    assert_match(/convergent rollout run did not finish within 4s and was stopped/, error.message)
    moved = Convergent::Rollout.progress(client, 'web-2.6.0')
    refute_equal before, moved
    assert_equal 'running', moved.status
    assert_equal 1, moved.record['done']
    web = moved.rollouts.find { |r| r['cluster'] == 'web' }
    assert_equal 1, web['record']['batches'], 'the canary was released'
    assert_match(%r{\Arunning, 1/2 steps done; web: rollout web-2.6.0.2 running, 1 batches released \(threshold 0\.\d\d\)\z}, moved.to_s)

    # The canary checks in: the next run resumes and releases the rest.
    released = NODES['web'].select do |n|
      JSON.parse(convergent!("--store=#{store}", 'attributes', '--cluster=web', "--node=#{n}"))
          .dig('convergent', 'desired', 'version') == '2.5.0'
    end
    assert_equal 1, released.size
    simulate('web', released.first)
    resumed = assert_raises(Convergent::TimeoutError) { kicking_client.rollout_run(file, options: { poll: '100ms' }, timeout: 3) }
    assert resumed.timeout?
    again = Convergent::Rollout.progress(client, 'web-2.6.0')
    refute_equal moved, again
    assert_equal 2, again.rollouts.find { |r| r['cluster'] == 'web' }['record']['batches']
  end

  def test_the_dry_run_prints_the_batches_and_writes_nothing
    file = plan_file('web-2.5.0', plan('web-2.5.0'))
    out = client.rollout_run(file, dry_run: true)
    assert_match(/plan web-2.5.0: 2 steps \(dry run: nothing is written\)/, out)
    assert_match(/canary +\(1\): web-0\d/, out)
    assert_nil client.plan_record('web-2.5.0')
    assert_empty client.rollouts
  end

  def test_a_failed_run_raises_the_orchestrators_message
    file = plan_file('web-bogus', plan('web-bogus', kick_web: false, set: { 'state' => 'bogus' }))
    error = assert_raises(Convergent::Error) { client.rollout_run(file) }
    assert_equal 65, error.exit_code
    assert_match(/\Aconvergent rollout run exited 65 \(bad data in the store or a file\): /, error.message)
    assert_includes error.message, 'bogus'
    assert_includes error.command, file
    assert_nil client.plan_record('web-bogus'), 'a refused plan writes nothing'
  end

  def test_plan_record_is_nil_only_for_a_plan_that_never_started
    assert_nil client.plan_record('never-run')
    File.delete(path('view.yml'))
    error = assert_raises(Convergent::Error) { client.plan_record('never-run') }
    refute_equal 0, error.exit_code
  end

  def test_a_background_orchestrator_runs_the_plan_to_its_end
    skip 'start-stop-daemon is not installed' unless File.executable?('/usr/sbin/start-stop-daemon') || File.executable?('/sbin/start-stop-daemon')
    file = plan_file('web-2.5.0', plan('web-2.5.0'))
    c = kicking_client
    pid_file = path('run/rollout.pid')
    log_file = path('log/rollout.log')
    c.start_detached(c.rollout_run_args(file, options: { poll: '100ms' }), pid_file: pid_file, log_file: log_file)
    deadline = Time.now + 30
    sleep 0.1 until Convergent::Rollout.progress(c, 'web-2.5.0').completed? || Time.now > deadline
    assert Convergent::Rollout.progress(c, 'web-2.5.0').completed?, File.read(log_file)
    sleep 0.1 while Convergent::Rollout.running_pid(pid_file) && Time.now < deadline
    assert_nil Convergent::Rollout.running_pid(pid_file), 'the orchestrator ended with its plan'
    assert_match(/plan web-2.5.0 completed/, File.read(log_file))
  end

  def test_running_pid_is_a_live_rollout_run_only
    pid_file = path('x.pid')
    assert_nil Convergent::Rollout.running_pid(pid_file), 'no file'
    File.write(pid_file, 'garbage')
    assert_nil Convergent::Rollout.running_pid(pid_file)
    other = Process.spawn('sleep', '30')
    looks_like = Process.spawn('sh', '-c', 'sleep 30', 'rollout', 'run')
    File.write(pid_file, other.to_s)
    assert_nil Convergent::Rollout.running_pid(pid_file), 'a process that is not a rollout run'
    File.write(pid_file, looks_like.to_s)
    assert_equal looks_like, Convergent::Rollout.running_pid(pid_file)
    Process.kill(:KILL, looks_like)
    Process.wait(looks_like)
    assert_nil Convergent::Rollout.running_pid(pid_file), 'a process that ended'
  ensure
    [other, looks_like].compact.each do |pid|
      Process.kill(:KILL, pid)
      Process.wait(pid)
    rescue SystemCallError
      nil
    end
  end

  def test_plan_text_names_the_plan_and_refuses_another_name
    text = Convergent::Rollout.plan_text('web-2.5.0', { steps: [{ cluster: 'web', set: { state: 'off' } }] })
    document = YAML.safe_load(text)
    assert_equal 'web-2.5.0', document['name']
    assert_equal 'off', document['steps'][0]['set']['state'], '"off" stays a string'
    error = assert_raises(Convergent::Error) { Convergent::Rollout.plan_text('web-2.5.0', { 'name' => 'web-2.6.0', 'steps' => [] }) }
    assert_includes error.message, 'is plan "web-2.6.0"'

    file = path('p.yml')
    File.write(file, "name: other\nsteps: []\n")
    assert_includes assert_raises(Convergent::Error) { Convergent::Rollout.plan_text('web-2.5.0', file) }.message, file
    File.write(file, "name: web-2.5.0\nsteps: []\n")
    assert_nil Convergent::Rollout.plan_text('web-2.5.0', file)
    assert_raises(Convergent::Error) { Convergent::Rollout.plan_text('web-2.5.0', 'relative.yml') }
    assert_raises(Convergent::Error) { Convergent::Rollout.plan_text('../etc', {}) }
    assert_raises(Convergent::Error) { Convergent::Rollout.plan_text('web-2.5.0', path('missing.yml')) }
  end

  def test_write_plan_writes_once_atomically_and_readable_by_root_only
    file = path('plans/p.yml')
    assert Convergent::Rollout.write_plan(file, "a\n")
    refute Convergent::Rollout.write_plan(file, "a\n"), 'unchanged: not written again'
    assert Convergent::Rollout.write_plan(file, "b\n")
    assert_equal "b\n", File.read(file)
    assert_equal 0o640, File.stat(file).mode & 0o777
    assert_equal ['p.yml'], Dir.children(path('plans')), 'no temporary file left'
  end

  def test_log_lines_logs_each_line_as_it_is_complete
    lines = Convergent::Rollout::LogLines.new(@log, 'p: ')
    lines << "one\ntw"
    assert_equal ['p: one'], @log.of(:info)
    lines << "o\n"
    assert_equal ['p: one', 'p: two'], @log.of(:info)
  end
end
