# frozen_string_literal: true

require_relative 'test_helper'
require_relative 'support/silent_server'

# Convergent::Client against the real binary and the file store.
class ClientTest < Minitest::Test
  include ConvergentTest::Sandbox

  def test_attributes_returns_the_desired_state_and_writes_the_attributes_file
    view('web-waiting')
    file = path('lib/web.json')
    result = client.attributes(cluster: 'web', node: 'web-01', output: file)

    assert_equal 'waiting', result['state']
    assert_equal '2.4.1', result['desired']['version']
    assert_equal 4, result['desired']['app']['workers']
    assert_match(/\A\h{16}\z/, result['generation'])
    assert_equal false, result['source']['stale']
    assert result.frozen? && result['desired'].frozen?, 'results are frozen: a recipe cannot change them by accident'
    # The file is the binary's own output: what `report` reads later.
    assert_equal result, JSON.parse(File.read(file))['convergent']
    assert_empty @log.of(:warn)
  end

  def test_every_value_is_one_argument_and_no_shell_is_involved
    view
    marker = path('injected')
    error = assert_raises(Convergent::Error) do
      client.attributes(cluster: "web; touch #{marker}", node: '--store=file:/etc/passwd')
    end
    refute File.exist?(marker), 'a shell ran part of a value'
    assert_equal 65, error.exit_code
    assert_includes error.command, "--cluster=web; touch #{marker}"
    assert_includes error.command, '--node=--store=file:/etc/passwd'
  end

  def test_a_cached_result_stands_in_for_an_unreachable_store_and_is_logged_with_its_age
    view
    fresh = client.attributes(cluster: 'web', node: 'web-01')
    File.delete(path('view.yml'))

    stale = client.attributes(cluster: 'web', node: 'web-01')
    assert_equal true, stale['source']['stale']
    assert_kind_of Integer, stale['source']['cache_age_s']
    assert_equal fresh['generation'], stale['generation']
    assert_equal fresh['desired'], stale['desired']
    warning = @log.of(:warn).join("\n")
    assert_match %r{web/web-01 \(generation #{fresh['generation']}, state "converged"\) comes from the cache}, warning
    assert_match(/fetched \d+s ago, at #{fresh['source']['fetched_at']}/, warning)
    assert_includes warning, 'does not exist', 'the binary says why the store could not be read'
  end

  def test_on_unreachable_fail_refuses_the_cache
    view
    client.attributes(cluster: 'web', node: 'web-01')
    File.delete(path('view.yml'))
    error = assert_raises(Convergent::Error) do
      client(on_unreachable: 'fail').attributes(cluster: 'web', node: 'web-01')
    end
    assert_equal 69, error.exit_code
    assert error.unavailable?
  end

  def test_an_unreachable_store_without_a_cache_is_exit_69_naming_what_was_looked_for
    error = assert_raises(Convergent::Error) { client.attributes(cluster: 'web', node: 'web-01') }
    assert_equal 69, error.exit_code
    assert_includes error.message, 'the store is unavailable and no usable cache could stand in'
    assert_includes error.stderr, File.join(path('cache'), 'web', 'web-01.json')
    assert_includes error.message, "command: #{ConvergentTest::BINARY}"
  end

  def test_bad_data_is_exit_65_naming_the_key_and_never_hidden_by_the_cache
    view
    client.attributes(cluster: 'web', node: 'web-01')
    File.write(path('view.yml'), File.read(path('view.yml')).sub('state: "converged"', 'state: "bogus"'))
    error = assert_raises(Convergent::Error) { client.attributes(cluster: 'web', node: 'web-01') }
    assert_equal 65, error.exit_code
    assert error.bad_data?
    assert_includes error.message, 'exited 65 (bad data in the store or a file)'
    assert_includes error.stderr, 'convergent/clusters/web/desired'
    assert_includes error.stderr, 'bogus'
  end

  def test_bad_configuration_is_exit_78_naming_the_file_and_field
    view
    File.write(@config, "stroe: file:/x.yml\n")
    error = assert_raises(Convergent::Error) { client.attributes(cluster: 'web', node: 'web-01') }
    assert_equal 78, error.exit_code
    assert error.bad_config?
    assert_includes error.stderr, @config
    assert_includes error.stderr, 'stroe'
  end

  def test_a_hung_store_is_stopped_at_the_command_timeout
    server = SilentServer.new
    started = Time.now
    error = assert_raises(Convergent::TimeoutError) do
      client(store: "etcd://127.0.0.1:#{server.port}", timeout: '60s', command_timeout: 1)
        .attributes(cluster: 'web', node: 'web-01')
    end
    assert error.timeout?
    assert_nil error.exit_code
    assert_includes error.message, 'did not finish within 1s and was stopped'
    assert_includes error.command, "--store=etcd://127.0.0.1:#{server.port}"
    # mixlib-shellout sends TERM, waits 3s, then KILL.
    assert_operator Time.now - started, :<, 10
  ensure
    server&.close
  end

  def test_a_hung_store_within_the_binary_timeout_is_unavailable
    server = SilentServer.new
    error = assert_raises(Convergent::Error) do
      client(store: "etcd://127.0.0.1:#{server.port}", timeout: '1s', command_timeout: 20)
        .attributes(cluster: 'web', node: 'web-01')
    end
    refute error.timeout?
    assert_equal 69, error.exit_code
  ensure
    server&.close
  end

  def test_a_missing_binary_is_a_clear_error
    error = assert_raises(Convergent::Error) do
      client(binary: path('no-such-convergent')).attributes(cluster: 'web', node: 'web-01')
    end
    assert_includes error.message, "cannot run #{path('no-such-convergent')}"
    assert_nil error.exit_code
  end

  def test_a_store_url_with_credentials_is_refused_without_repeating_it
    error = assert_raises(Convergent::Error) { client(store: 'etcd://deployer:Sekr1t-pw@127.0.0.1:2379') }
    assert_includes error.message, 'carries credentials'
    refute_secret 'Sekr1t-pw', error.message
  end

  def test_secret_environment_values_are_redacted_and_never_inspected
    view
    secret = 'Hunter2-very-secret'
    c = client(credentials: { 'CONVERGENT_PREFIX' => secret })
    error = assert_raises(Convergent::Error) { c.attributes(cluster: 'web', node: 'web-01') }
    # The binary names the key, prefix included; the client redacts it.
    assert_equal 65, error.exit_code
    assert_includes error.stderr, '[redacted]'
    refute_secret secret, error.message, error.stderr, error.command_line, c.inspect
  end

  def test_report_records_success_and_failure_from_the_attributes_file
    view
    file = path('web.json')
    result = client.attributes(cluster: 'web', node: 'web-01', output: file)

    out = client.report(status: :success, attributes_file: file, duration: 12.345)
    assert_equal "convergent/observed/web/web-01: success at generation #{result['generation']} (state converged)", out
    observed = YAML.safe_load(File.read(path('view.yml')))['convergent']['observed']['web']['web-01']
    assert_equal 'success', observed['status']
    assert_equal result['generation'], observed['generation']
    assert_in_delta 12.3, observed['duration_s'], 0.01

    client.report(status: 'failure', attributes_file: file, message: 'Chef::Exceptions::Exec')
    observed = YAML.safe_load(File.read(path('view.yml')))['convergent']['observed']['web']['web-01']
    assert_equal 'failure', observed['status']
    assert_equal 'Chef::Exceptions::Exec', observed['message']
  end

  def test_report_to_an_unreachable_store_is_exit_69
    view
    client.attributes(cluster: 'web', node: 'web-01', output: path('web.json'))
    File.delete(path('view.yml'))
    error = assert_raises(Convergent::Error) { client.report(status: :success, attributes_file: path('web.json')) }
    assert_equal 69, error.exit_code
  end

  def test_version
    assert_match(/\Aconvergent \d+\.\d+\.\d+/, client.version)
  end

  # What convergent_report and convergent_rollout build from their
  # connection properties (resources/_partial/_connection.rb).
  def test_for_resource_takes_the_connection_properties
    view
    props = %i(binary store prefix cache_dir timeout command_timeout token_file environment credentials)
    resource = Struct.new(*props).new(ConvergentTest::BINARY, "file:#{path('view.yml')}", 'pfx', path('cache'), '3s', 7,
                                      nil, { 'ETCDCTL_USER' => 'deployer' }, { 'ETCDCTL_PASSWORD' => 's3cret-pw' })
    c = Convergent::Client.for_resource(resource, config_file: @config, logger: @log)
    assert_equal 7, c.command_timeout
    assert_equal [ConvergentTest::BINARY, "--config=#{@config}", "--store=file:#{path('view.yml')}", '--prefix=pfx',
                  "--cache-dir=#{path('cache')}", '--timeout=3s', 'x'], c.command_for(['x'])
    refute_includes c.inspect, 's3cret-pw'
    assert_includes c.inspect, 'ETCDCTL_PASSWORD'
  end
end
