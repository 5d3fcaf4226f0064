# frozen_string_literal: true

#
# Cookbook:: convergent
# Resource:: convergent_config
#
# Writes the binary's config file (/etc/convergent/config.yml) with exactly
# the fields it accepts, and the store's secret to a token file (root, 0600).
# Unset properties are left out of the file, so the binary's defaults apply.
#
#   convergent_config '/etc/convergent/config.yml' do
#     store 'etcd+https://10.0.0.1:2379,10.0.0.2:2379'
#     cluster 'web'
#     token_file '/etc/convergent/etcd.password'
#     token chef_vault_item('convergent', 'etcd')['password']
#   end

provides :convergent_config
unified_mode true

property :path, String, name_property: true
property :store, String,
         callbacks: { 'must be a store URL without credentials' => ->(url) { Convergent::StoreUrl.check!(url).nil? } }
property :prefix, String
property :output_format, String, equal_to: %w(json yaml table),
         description: 'The `format` field'
property :cache_dir, String
property :max_stale, String, regex: Convergent::ConfigFile::DURATION
property :on_unreachable, String, equal_to: %w(cache fail)
property :timeout, String, regex: Convergent::ConfigFile::DURATION
property :cluster, String
property :node_name, String, description: 'The `node` field'
property :member_ttl, String, regex: Convergent::ConfigFile::DURATION
# Where the store's secret goes: for etcd the store URL written gets
# `password_file=` this file; Consul reads it from CONSUL_HTTP_TOKEN_FILE.
property :token_file, String, desired_state: false
property :token, [String, nil], sensitive: true, desired_state: false,
         description: "The store's secret (etcd password, Consul ACL token); nil: the token file is left alone"

default_action :create

load_current_value do |new_resource|
  current_value_does_not_exist! unless ::File.file?(new_resource.path)
  fields = Convergent::ConfigFile.parse(::File.read(new_resource.path), token_file: new_resource.token_file)
  Convergent::ConfigFile::PROPERTIES.each do |property, field|
    send(property, fields[field]) if fields.key?(field)
  end
end

action :create do
  raise ArgumentError, "#{new_resource}: token needs token_file" if new_resource.token && !new_resource.token_file
  # Two resources writing one file rewrite it in turn in every run.
  owners = run_context.root_run_context.resource_collection.all_resources.select do |r|
    r.resource_name == :convergent_config && r.path == new_resource.path
  end
  if owners.size > 1
    raise Convergent::Error, "#{new_resource.path} is declared #{owners.size} times " \
                             "(#{owners.map(&:source_line).join(', ')}): one convergent_config owns a file. " \
                             "With convergent::default, set node['convergent']['token_file'] and " \
                             "node.run_state['convergent_token'] instead of declaring your own (README \"Credentials\")"
  end

  directory ::File.dirname(new_resource.path) do
    owner 'root'
    group 'root'
    mode '0755'
    recursive true
  end

  if new_resource.token
    file new_resource.token_file do
      content new_resource.token
      owner 'root'
      group 'root'
      mode '0600'
      sensitive true
    end
  end

  # Every field is compared, set or not (converge_if_changed looks only at
  # the properties set), so that a field dropped from the resource also
  # leaves the file.
  desired = Convergent::ConfigFile.fields(new_resource, token_file: new_resource.token_file)
  current = current_resource && Convergent::ConfigFile.fields(current_resource, token_file: new_resource.token_file)
  changes = Convergent::ConfigFile.changes(current, desired)
  unless changes.empty?
    converge_by(changes.map { |c| "#{new_resource.path}: #{c}" }) do
      Convergent::ConfigFile.write(new_resource.path, Convergent::ConfigFile.render(desired))
    end
  end
end

action :delete do
  file new_resource.path do
    action :delete
  end
  if new_resource.token_file
    file new_resource.token_file do
      action :delete
      sensitive true
    end
  end
end
