# frozen_string_literal: true

#
# Cookbook:: convergent
# Resource partial:: _connection
#
# How a resource runs the binary: connection settings, never desired state.
# Each defaults to the node's `convergent` attributes.

property :binary, String,
         default: lazy { node['convergent']['binary'] },
         desired_state: false,
         description: 'Path of the convergent binary'

# check! raises its own error: Chef's validation message would repeat the
# URL, credentials and all.
property :store, [String, nil],
         default: lazy { node['convergent']['store'] },
         desired_state: false,
         callbacks: { 'must be a store URL without credentials' => ->(url) { Convergent::StoreUrl.check!(url).nil? } },
         description: 'Store URL (nil: the config file or the binary default)'

property :prefix, [String, nil],
         default: lazy { node['convergent']['prefix'] },
         desired_state: false

property :cache_dir, [String, nil],
         default: lazy { node['convergent']['cache_dir'] },
         desired_state: false

property :timeout, [String, nil],
         default: lazy { node['convergent']['timeout'] },
         desired_state: false,
         regex: Convergent::ConfigFile::DURATION,
         description: "The binary's bound on store requests, e.g. 5s"

property :command_timeout, [Integer, Float],
         default: lazy { node['convergent']['command_timeout'] },
         desired_state: false,
         description: 'Seconds before a run of the binary is stopped'

property :token_file, [String, nil],
         default: lazy { node['convergent']['token_file'] },
         desired_state: false,
         description: "File holding the store's secret"

property :environment, Hash,
         default: lazy { node['convergent']['environment'].to_h },
         desired_state: false,
         description: 'Environment variables for the binary that are not secret'

property :credentials, Hash,
         default: lazy { Convergent::RunState.new(node.run_state).credentials },
         desired_state: false,
         sensitive: true,
         description: 'Secret environment variables for the binary (e.g. ETCDCTL_PASSWORD)'
