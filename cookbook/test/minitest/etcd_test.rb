# frozen_string_literal: true

require_relative 'test_helper'
require_relative 'support/etcd_server'

# Convergent::Client against a real etcd with authentication on: exit 77,
# credentials through the environment or a token file, and no secret in any
# text the client produces.
class EtcdTest < Minitest::Test
  include ConvergentTest::Sandbox

  PASSWORD = 'Sekr1t-pw-4242'
  ROOT_PASSWORD = 'r00t-pw-4242'

  def setup
    super
    @etcd = EtcdServer.start
    convergent!("--store=#{@etcd.url}", 'import', File.join(ConvergentTest::VIEWS, 'web-converged.yml'))
    @etcd.enable_auth(root_password: ROOT_PASSWORD, user: 'deployer', password: PASSWORD, prefix: 'convergent/')
  end

  def teardown
    @etcd&.stop
    super
  end

  def etcd_client(**settings)
    client(store: @etcd.url, **settings)
  end

  def test_no_credentials_is_exit_77
    error = assert_raises(Convergent::Error) { etcd_client.attributes(cluster: 'web', node: 'web-01') }
    assert_equal 77, error.exit_code
    assert error.permission_denied?
    assert_includes error.message, 'exited 77 (permission denied by the store)'
    assert_includes error.stderr, 'ETCDCTL_USER'
  end

  def test_credentials_in_the_environment_work_and_a_wrong_password_never_shows
    result = etcd_client(credentials: { 'ETCDCTL_USER' => "deployer:#{PASSWORD}" })
             .attributes(cluster: 'web', node: 'web-01', output: path('web.json'))
    assert_equal 'converged', result['state']
    assert_equal 'etcd', result['source']['store']

    wrong = 'Wr0ng-pw-9999'
    c = etcd_client(credentials: { 'ETCDCTL_USER' => "deployer:#{wrong}" })
    error = assert_raises(Convergent::Error) { c.attributes(cluster: 'web', node: 'web-01') }
    assert_equal 77, error.exit_code
    refute_secret wrong, error.message, error.stderr, error.command_line, c.inspect
    refute(error.command.any? { |arg| arg.include?(wrong) || arg.include?(PASSWORD) })
    # Nothing secret reaches the cache or the attributes file either.
    Dir[File.join(@dir, '**', '*.json')].each { |f| refute_secret PASSWORD, File.read(f) }
  end

  def test_a_token_file_gives_the_password_and_the_command_line_only_its_path
    token_file = path('etcd.password')
    File.write(token_file, "#{PASSWORD}\n", perm: 0o600)
    c = etcd_client(token_file: token_file, environment: { 'ETCDCTL_USER' => 'deployer' })
    result = c.attributes(cluster: 'web', node: 'web-01', output: path('web.json'))
    assert_equal 'converged', result['state']
    assert_includes c.command_for(['attributes']), "--store=#{@etcd.url}?password_file=#{token_file}"

    out = c.report(status: :success, attributes_file: path('web.json'), duration: 1)
    assert_includes out, 'convergent/observed/web/web-01: success'
  end
end
