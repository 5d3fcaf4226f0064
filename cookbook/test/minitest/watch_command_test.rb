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
end
