#
# Cookbook:: convergent_test
# Recipe:: credentials
#
# The README's credentials pattern: convergent::default is the one owner of
# /etc/convergent/config.yml and writes the store's secret to the token file
# from node.run_state['convergent_token'] (here a fixed test value; chef-vault
# or the like in real life, never a node attribute).
#
# The store is a real Consul agent with ACLs on (default deny) whose
# management token is that secret, when test/fixtures/bin/consul is there
# (scripts/kitchen stages it); the run reads web through the token file once
# the file exists (a node's first run writes it at converge: README), so the
# second run checks in. Without the binary the store is a Consul URL that is
# never read.

data_dir = node['convergent_test']['data_dir']
token = 'kitchen-test-token'
token_file = '/etc/convergent/store.token'
consul = ::File.join(data_dir, 'bin', 'consul')

include_recipe 'convergent_test::_node'
node.default['convergent']['token_file'] = token_file
if ::File.executable?(consul)
  port = ConvergentTest::ConsulAgent.ensure_running(
    consul: consul, dir: '/var/lib/convergent-test/consul', management: token,
    convergent: ::File.join(data_dir, 'bin', 'convergent'), view: ::File.join(data_dir, 'views', 'fleet.yml')
  )
  node.default['convergent']['store'] = "consul://127.0.0.1:#{port}"
else
  node.default['convergent']['store'] = 'consul://127.0.0.1:8500'
end

include_recipe 'convergent::default'

node.run_state['convergent_token'] = token
convergent_desired('web') if ::File.executable?(consul) && ::File.exist?(token_file)

# test/fixtures/chef-runs puts this flag there for one run: a second
# convergent_config for the same file, as the README used to suggest, must
# fail that run with a clear error instead of both rewriting the file.
if ::File.exist?('/var/lib/convergent-test/duplicate-config')
  convergent_config '/etc/convergent/config.yml' do
    store 'consul://127.0.0.1:8500'
    token_file token_file
    token token
  end
end
