#
# Cookbook:: convergent
# Recipe:: config
#
# Writes /etc/convergent/config.yml from node['convergent'], so that an
# operator on the node (`convergent explain`) and `convergent watch` use the
# same store, prefix, cache and node as the chef run. It is the file's one
# owner (a second convergent_config for it is refused): with
# node['convergent']['token_file'] set, it also writes the store's secret
# there, from node.run_state['convergent_token'], which a recipe sets from a
# secret source (README "Credentials"); a token is never an attribute.

settings = node['convergent']

convergent_config settings['config_file'] do
  store settings['store'] if settings['store']
  prefix settings['prefix'] if settings['prefix']
  cache_dir settings['cache_dir'] if settings['cache_dir']
  max_stale settings['max_stale'] if settings['max_stale']
  on_unreachable settings['on_unreachable'] if settings['on_unreachable']
  timeout settings['timeout'] if settings['timeout']
  cluster settings['cluster'] if settings['cluster']
  node_name convergent_node_name
  if settings['token_file']
    token_file settings['token_file']
    # lazy: set by any recipe of the run, also one compiled after this one
    token lazy { Convergent::RunState.new(node.run_state).token }
  end
end
