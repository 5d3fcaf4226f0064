#
# Cookbook:: convergent_test
# Recipe:: json_attributes
#
# A run started the way `convergent watch --exec chef-client -- -j FILE`
# starts one: test/fixtures/chef-runs passes the attributes file of cluster
# web with -j. While compiling, this records what the run saw in
# /var/lib/convergent-test/seen-N.json (N: the run), as plain Ruby so that
# it is no resource: node['convergent'] (the merged node attributes) and
# convergent_desired('web').

require 'fileutils'
require 'json'

# Kitchen's suite attributes do not reach this run (its -j file is the
# attributes file): the suite's settings are here.
node.default['convergent_test']['view'] = 'fleet'
node.default['convergent_test']['node'] = 'web-01'
include_recipe 'convergent_test::_node'
include_recipe 'convergent::default'

dir = '/var/lib/convergent-test'
FileUtils.mkdir_p(dir)
run = Dir.glob(::File.join(dir, 'seen-*.json')).size + 1
::File.write(
  ::File.join(dir, "seen-#{run}.json"),
  JSON.pretty_generate(
    'node_attributes' => node['convergent'].to_hash,
    'desired' => convergent_desired('web'),
    'generation' => convergent_generation('web')
  )
)
