#
# Cookbook:: convergent
# Recipe:: config
#
# Writes /etc/convergent/config.yml from node['convergent'], so that an
# operator on the node (`convergent explain`) and `convergent watch` use the
# same store, prefix, cache and node as the chef run. A token is not an
# attribute: declare convergent_config yourself with `token` from a secret
# source (README "Credentials").

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
  token_file settings['token_file'] if settings['token_file']
end
