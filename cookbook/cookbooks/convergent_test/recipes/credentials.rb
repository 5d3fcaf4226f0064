#
# Cookbook:: convergent_test
# Recipe:: credentials
#
# The README's credentials pattern: a token file and the store's secret
# from a secret source (here a fixed test value), with convergent::default
# the one owner of /etc/convergent/config.yml.

include_recipe 'convergent_test::_node'
node.default['convergent']['token_file'] = '/etc/convergent/store.token'
# From chef-vault or the like in real life; never a node attribute.
node.run_state['convergent_token'] = 'kitchen-test-token'

include_recipe 'convergent::default'
