# frozen_string_literal: true

require_relative 'test_helper'

# The example service: what each fixture view makes the recipes declare, and
# the shipped init script and daemon, run for real in a temporary folder.
class ExampleWebTest < Minitest::Test
  include ConvergentTest::Sandbox

  def plan_for(view_name)
    view(view_name)
    Convergent::ExampleWeb.plan(client.attributes(cluster: 'web', node: 'web-01'))
  end

  def test_each_state_of_the_fixtures
    off = plan_for('web-off')
    assert_equal ['off', false, false], [off.state, off.install, off.run]

    waiting = plan_for('web-waiting')
    assert_equal ['waiting', true, false], [waiting.state, waiting.install, waiting.run]
    assert_equal '/opt/convergent-web/releases/2.4.1', waiting.release
    assert_equal({ cluster: 'web', version: '2.4.1', port: 8080, workers: 4, log_level: 'info' }, waiting.config)

    converged = plan_for('web-converged')
    assert_equal ['converged', true, true, 'store'], [converged.state, converged.install, converged.run, converged.source]
  end

  def test_a_result_from_the_cache_says_so
    view
    client.attributes(cluster: 'web', node: 'web-01')
    File.delete(path('view.yml'))
    assert_equal 'cache', Convergent::ExampleWeb.plan(client.attributes(cluster: 'web', node: 'web-01')).source
  end

  def test_values_that_would_reach_a_path_or_a_script_are_refused
    result = { 'cluster' => 'web', 'state' => 'converged', 'source' => { 'stale' => false } }
    ['../../etc', "2.4'; rm -rf /; '", '', nil].each do |version|
      error = assert_raises(Convergent::Error) do
        Convergent::ExampleWeb.plan(result.merge('desired' => { 'version' => version }))
      end
      assert_includes error.message, 'is not a version'
    end
    assert_raises(Convergent::Error) do
      Convergent::ExampleWeb.plan(result.merge('state' => 'maybe', 'desired' => {}))
    end
    assert_raises(Convergent::Error) do
      Convergent::ExampleWeb.plan(result.merge('desired' => { 'version' => '1.0', 'app' => { 'port' => '80; x' } }))
    end
    # "off" changes nothing, so it needs no version.
    assert_equal 'off', Convergent::ExampleWeb.plan(result.merge('state' => 'off', 'desired' => {})).state
  end

  def render(template, variables)
    context = Object.new
    variables.each { |name, value| context.instance_variable_set("@#{name}", value) }
    ERB.new(File.read(File.join(COOKBOOK, 'templates', template))).result(context.instance_eval { binding })
  end

  def init(command)
    shell = Mixlib::ShellOut.new('/bin/sh', path('init'), command, timeout: 30)
    shell.run_command
    shell
  end

  def test_the_init_script_starts_reports_and_stops_the_daemon
    config = path('app.conf')
    File.write(config, render('app.conf.erb', cluster: 'web', version: '2.4.1', port: 8080, workers: 4, log_level: 'info'))
    File.write(path('convergent-web'),
               render('convergent-web.erb', version: '2.4.1', state_file: path('running'), config_file: config))
    File.chmod(0o755, path('convergent-web'))
    File.write(path('init'), render('convergent-web.init.erb',
                                    daemon: path('convergent-web'), pid_file: path('pid'), log_file: path('log')))
    begin
      assert_equal 3, init('status').exitstatus
      assert_equal 0, init('start').exitstatus
      assert_equal 0, init('status').exitstatus
      pid = File.read(path('pid')).to_i
      assert_equal "version 2.4.1\n", File.read(path('running')).lines.first
      assert_includes File.read(path('running')), "workers = 4\n"
      # Starting again keeps the one process.
      assert_equal 0, init('start').exitstatus
      assert_equal pid, File.read(path('pid')).to_i
      assert_equal 0, init('stop').exitstatus
      assert_equal 3, init('status').exitstatus
      refute File.exist?(path('running')), 'the daemon cleans up on TERM'
      assert_raises(Errno::ESRCH) { Process.kill(0, pid) }
    ensure
      init('stop')
    end
  end

  def test_the_init_script_refuses_a_missing_daemon
    File.write(path('init'), render('convergent-web.init.erb',
                                    daemon: path('nothing'), pid_file: path('pid'), log_file: path('log')))
    shell = init('start')
    assert_equal 5, shell.exitstatus
    assert_includes shell.stderr, 'is not installed'
  end

  def test_the_init_script_has_the_headers_update_rc_d_reads
    text = File.read(File.join(COOKBOOK, 'templates', 'convergent-web.init.erb'))
    assert_match(/^### BEGIN INIT INFO\n(# .*\n)*# Default-Start: +2 3 4 5\n(# .*\n)*### END INIT INFO$/, text)
  end
end
