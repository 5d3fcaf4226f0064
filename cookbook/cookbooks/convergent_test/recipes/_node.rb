#
# Cookbook:: convergent_test
# Recipe:: _node
#
# A suite's node: the binary and the view from the uploaded fixtures, in
# cluster web (the quick start's `cluster` attribute), named
# node['convergent_test']['node'] in the view when that is set.

data_dir = node['convergent_test']['data_dir']

node.default['convergent']['install']['source'] = ::File.join(data_dir, 'bin', 'convergent')
node.default['convergent']['store'] = "file:#{::File.join(data_dir, 'views', "#{node['convergent_test']['view']}.yml")}"
node.default['convergent']['cluster'] = 'web'
node.default['convergent']['node'] = node['convergent_test']['node'] if node['convergent_test']['node']
