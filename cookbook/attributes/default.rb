#
# Cookbook:: convergent
# Attributes:: default
#
# How recipes run the `convergent` binary. A nil setting is left to the
# binary: its config file (/etc/convergent/config.yml when present), then its
# own default. Secrets never go here (node attributes are saved on the Chef
# server): see README "Credentials".

# The binary, and where convergent::install takes it from.
default['convergent']['binary'] = '/usr/local/bin/convergent'
# A local path, a file:// or http(s) URL of a release tarball, a .deb or a
# raw binary; it may name %{version}, %{target}, %{arch}, %{machine} (see
# convergent_installation). nil: the binary is installed some other way.
default['convergent']['install']['source'] = nil
# The release (required for a tarball).
default['convergent']['install']['version'] = nil
# sha256 of the file; a Hash by machine ('x86_64', 'aarch64') for a source
# naming %{target} or %{arch}. Required for a URL, checked for a local path.
default['convergent']['install']['sha256'] = nil
# Install while the recipes compile, so that compile-time reads
# (convergent_desired) work on a node's first run.
default['convergent']['install']['compile_time'] = true

# The store and key prefix (binary defaults: file:/etc/convergent/view.yml, convergent).
default['convergent']['store'] = nil
default['convergent']['prefix'] = nil
# This node's cluster (used by convergent::config, the report of a run that
# failed before it read anything, and the example recipes) and its name in
# the view (nil: the Chef node name).
default['convergent']['cluster'] = nil
default['convergent']['node'] = nil

# The last-known-good cache, and when it may stand in for the store.
default['convergent']['cache_dir'] = '/var/cache/convergent'
default['convergent']['max_stale'] = nil      # binary default 24h
default['convergent']['on_unreachable'] = nil # "cache" (binary default) or "fail"

# The binary's bound on store requests, and the cookbook's hard bound (in
# seconds) on one run of the binary, after which it is stopped.
default['convergent']['timeout'] = '5s'
default['convergent']['command_timeout'] = 30

# Where each cluster's attributes file is written (DIR/CLUSTER.json): the
# file the report handler reports from.
default['convergent']['attributes_dir'] = '/var/lib/convergent'

# A file holding the store's secret (etcd password, Consul token), written
# 0600 by convergent_config; the client passes it the store's way.
default['convergent']['token_file'] = nil
# Environment variables for the binary that are not secret, e.g.
# { 'ETCDCTL_USER' => 'deployer', 'ETCDCTL_CACERT' => '/etc/ssl/etcd-ca.pem' }.
default['convergent']['environment'] = {}

# The config file convergent::config writes (and the client passes with
# --config when it exists).
default['convergent']['config_file'] = '/etc/convergent/config.yml'
# Register the report handler (convergent::report) from convergent::default.
default['convergent']['report']['enabled'] = true

# The cluster of the example recipes (convergent::example_web*).
default['convergent']['example_web']['cluster'] = 'web'

# convergent::rollout, on an orchestration node: the plans it runs, by name,
# each a Hash (the plan's steps, as in a plan file; written to
# /var/lib/convergent/plans/NAME.yml) or the absolute path of a plan file
# whose name is NAME. Run in the order given; a completed plan runs nothing.
# (Not under node['convergent']['rollout']: in a -j run that key is the
# view's reading, taken out of node attributes; see the end of this file.)
default['convergent']['orchestrator']['plans'] = {}
# true: each plan runs to its end in the chef run (up to wait_timeout
# seconds); false: its orchestrator starts in the background.
default['convergent']['orchestrator']['wait'] = true
default['convergent']['orchestrator']['wait_timeout'] = 3600
# How often the orchestrator reads the fleet, and when a silent node is
# absent (nil: the binary's defaults, 2s and 1h).
default['convergent']['orchestrator']['poll'] = nil
default['convergent']['orchestrator']['member_ttl'] = nil

# A run started with an attributes file of `convergent attributes` passed
# with -j (as `convergent watch --exec chef-client -- -j FILE` does): its
# reading is taken out of normal attributes (saved with the node, so a key
# the view removed would stay there) into node.run_state for this run, where
# convergent_desired and the report handler find it. See
# libraries/json_attributes.rb.
Convergent::JsonAttributes.take(node, Chef::Config[:json_attribs]) if defined?(Chef::Config)
