#
# Cookbook:: convergent_test
# Recipe:: credentials
#
# The README's credentials pattern: convergent::default is the one owner of
# /etc/convergent/config.yml and writes the store's secret to the token file
# from node.run_state['convergent_token'] (here a fixed test value; chef-vault
# or the like in real life, never a node attribute). The store is a Consul
# URL (a token file is for etcd and Consul); this suite reads nothing from it.

include_recipe 'convergent_test::_node'
node.default['convergent']['store'] = 'consul://127.0.0.1:8500'
node.default['convergent']['token_file'] = '/etc/convergent/store.token'

include_recipe 'convergent::default'

node.run_state['convergent_token'] = 'kitchen-test-token'

# test/fixtures/chef-runs puts this flag there for one run: a second
# convergent_config for the same file, as the README used to suggest, must
# fail that run with a clear error instead of both rewriting the file.
if ::File.exist?('/var/lib/convergent-test/duplicate-config')
  convergent_config '/etc/convergent/config.yml' do
    store 'consul://127.0.0.1:8500'
    token_file '/etc/convergent/store.token'
    token 'kitchen-test-token'
  end
end
