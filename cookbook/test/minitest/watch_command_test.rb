# frozen_string_literal: true

require_relative 'test_helper'

class WatchCommandTest < Minitest::Test
  def argv(**overrides)
    Convergent::WatchCommand.argv(binary: '/usr/local/bin/convergent', cluster: 'web', node: 'web-01',
                                  exec: '/usr/bin/chef-client', **overrides)
  end

  def test_the_command_line
    assert_equal %w(/usr/local/bin/convergent --store file:/v.yml watch --cluster web --node web-01 --splay 30s
                    --splay-from node --interval 5m --exec /usr/bin/chef-client -- -j /a.json),
                 argv(store: 'file:/v.yml', splay: '30s', args: %w(-j /a.json))
  end

  def test_bad_durations_and_stores_with_credentials_are_refused
    assert_raises(Convergent::Error) { argv(splay: 'soon') }
    assert_raises(Convergent::Error) { argv(store: 'etcd://user:secret@h:2379') }
  end

  # The binary parses what the resource writes: `watch --help` accepts it
  # (a missing program is refused at start with 64, after the parse).
  def test_the_binary_accepts_the_command_line
    cmd = argv(store: 'file:/nonexistent.yml', splay: '2s', splay_from: 'random', exec: '/nonexistent/program')
    cmd[0] = ConvergentTest::BINARY
    out = Mixlib::ShellOut.new(*cmd, timeout: 30)
    out.run_command
    assert_equal 64, out.exitstatus, out.stderr
    assert_includes out.stderr, '/nonexistent/program'
  end

  def test_systemd_quoting_keeps_every_word_literal
    assert_equal '"/bin/sh" "-c" "echo \\"$$X\\" 50%% \\\\"',
                 Convergent::WatchCommand.systemd_exec(['/bin/sh', '-c', 'echo "$X" 50% \\'])
    assert_equal '"A=x\\"y%%$"', Convergent::WatchCommand.systemd_env('A', 'x"y%$')
    assert_raises(Convergent::Error) { Convergent::WatchCommand.systemd_env('A B', 'x') }
  end

  def test_shell_quoting
    assert_equal "/bin/sh -c echo\\ \\$X", Convergent::WatchCommand.shell(['/bin/sh', '-c', 'echo $X'])
  end

  def render(template, variables)
    context = Object.new
    variables.each { |name, value| context.instance_variable_set("@#{name}", value) }
    ERB.new(File.read(File.join(COOKBOOK, 'templates', template)), trim_mode: '-').result(context.instance_eval { binding })
  end

  # convergent_watch's systemd unit, as the resource renders it, passes
  # `systemd-analyze verify` (the test machine has no running systemd: only
  # the complaint about its bus is let through).
  def test_the_systemd_unit_verifies
    analyze = ['/usr/bin/systemd-analyze', '/bin/systemd-analyze'].find { |p| File.executable?(p) }
    skip 'systemd-analyze is not installed (Debian package systemd)' unless analyze
    Dir.mktmpdir do |dir|
      unit = File.join(dir, 'convergent-watch-web.service')
      cmd = argv(store: 'file:/etc/convergent/view.yml', args: ['-j', '/var/lib/a b.json', '50%', '$HOME'])
      cmd[0] = ConvergentTest::BINARY
      File.write(unit, render('convergent-watch.service.erb',
                              cluster: 'web', exec: '/usr/bin/chef-client', argv: cmd, no_new_privileges: false,
                              environment: { 'ETCDCTL_USER' => 'deployer', 'NOTE' => 'a "quoted" 100% $value' }))
      out = Mixlib::ShellOut.new(analyze, 'verify', unit, timeout: 60)
      out.run_command
      complaints = (out.stdout + out.stderr).lines.reject { |l| l.include?('Failed to connect to bus') || l.strip.empty? }
      assert_equal 0, out.exitstatus, out.stdout + out.stderr
      assert_empty complaints
      assert_includes File.read(unit), %(ExecStart="#{ConvergentTest::BINARY}" "--store")
    end
  end
end
