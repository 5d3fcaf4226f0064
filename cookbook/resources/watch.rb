# frozen_string_literal: true

#
# Cookbook:: convergent
# Resource:: convergent_watch
#
# Runs the node agent (`convergent watch`) for one cluster as a service,
# convergent-watch-CLUSTER: a systemd unit where systemd runs the machine,
# else a plain init script (a supervised background process with a pid file
# and a log). It runs `exec` (default chef-client) whenever this node's
# resolved desired state changes, after a splay: by default a fixed share of
# it derived from the cluster and node names (so each node's time is
# predictable, and a fleet is spread evenly), or a random share.
#
#   convergent_watch 'web' do
#     exec '/usr/bin/chef-client'
#     splay '5m'
#   end

provides :convergent_watch
unified_mode true

property :cluster, String, name_property: true,
         callbacks: { 'must be a cluster name' => ->(c) { c.match?(/\A[A-Za-z0-9][A-Za-z0-9_.-]*\z/) } }
property :node_name, String, default: lazy { node['convergent']['node'] || node.name },
         description: "This node's name in the view (default: node['convergent']['node'], else the Chef node name)"
property :exec, String, default: '/usr/bin/chef-client',
         description: 'The program to run on a change (no shell)'
property :args, Array, default: [],
         description: "The program's arguments"
property :splay, String, default: '0s', regex: Convergent::WatchCommand::DURATION,
         description: 'Wait up to this long before each run'
property :splay_from, String, default: 'node', equal_to: %w(node random),
         description: 'node: a fixed share of the splay from the cluster and node names; random: a random share each run'
property :interval, String, default: '5m', regex: Convergent::WatchCommand::DURATION,
         description: 'Look again this often, in case a change notice was missed'
property :output, String,
         description: 'The attributes file the program reads (default: the binary chooses, next to its cache)'
property :binary, String, default: lazy { node['convergent']['binary'] }
property :store, String, default: lazy { node['convergent']['store'] },
         callbacks: { 'must be a store URL without credentials' => ->(url) { Convergent::StoreUrl.check!(url).nil? } }
property :cache_dir, String, default: lazy { node['convergent']['cache_dir'] }
property :environment, Hash, default: lazy { node['convergent']['environment'].to_h },
         description: 'Variables for the agent that are not secret (ETCDCTL_USER, CONSUL_HTTP_TOKEN_FILE, ...)'
property :service_manager, String, default: 'auto', equal_to: %w(auto systemd init),
         description: 'auto: systemd when it runs the machine, else an init script'
property :log_file, String, default: lazy { "/var/log/convergent/watch-#{cluster}.log" },
         description: "The agent's log under the init script (systemd: the journal)"

default_action :start

action_class do
  def service_name
    "convergent-watch-#{new_resource.cluster}"
  end

  def systemd?
    case new_resource.service_manager
    when 'systemd' then true
    when 'init' then false
    else ::File.directory?('/run/systemd/system')
    end
  end

  def argv
    Convergent::WatchCommand.argv(
      binary: new_resource.binary, cluster: new_resource.cluster, node: new_resource.node_name,
      exec: new_resource.exec, args: new_resource.args, store: new_resource.store,
      splay: new_resource.splay, splay_from: new_resource.splay_from, interval: new_resource.interval,
      output: new_resource.output, cache_dir: new_resource.cache_dir
    )
  end

  # The service, declared first so that a changed definition can restart it.
  def declare_service
    name = service_name
    use_systemd = systemd?
    service name do
      provider Chef::Provider::Service::Debian unless use_systemd
      supports status: true, restart: true
      action :nothing
    end
  end

  # The unit or init script; a change restarts a running agent.
  def write_definition
    name = service_name
    if systemd?
      template "/etc/systemd/system/#{name}.service" do
        source 'convergent-watch.service.erb'
        cookbook 'convergent'
        owner 'root'
        group 'root'
        mode '0644'
        variables(cluster: new_resource.cluster, exec: new_resource.exec, argv: argv,
                  environment: new_resource.environment, no_new_privileges: false)
        notifies :run, 'execute[convergent: systemctl daemon-reload]', :immediately
        notifies :restart, "service[#{name}]", :immediately
      end
    else
      directory ::File.dirname(new_resource.log_file) do
        owner 'root'
        group 'root'
        mode '0755'
        recursive true
      end
      template "/etc/init.d/#{name}" do
        source 'convergent-watch.init.erb'
        cookbook 'convergent'
        owner 'root'
        group 'root'
        mode '0755'
        variables(name: name, cluster: new_resource.cluster, argv: argv, environment: new_resource.environment,
                  pid_file: "/run/#{name}.pid", log_file: new_resource.log_file)
        notifies :restart, "service[#{name}]", :immediately
      end
    end
  end

  def declare_daemon_reload
    execute 'convergent: systemctl daemon-reload' do
      command 'systemctl daemon-reload'
      action :nothing
    end
  end

  # :start and :restart: the unit or init script written, then the service
  # enabled and started (or restarted).
  def run_agent(verb)
    declare_daemon_reload if systemd?
    declare_service
    write_definition
    service service_name do
      provider Chef::Provider::Service::Debian unless systemd?
      supports status: true, restart: true
      action [:enable, verb]
    end
  end
end

action :start do
  run_agent(:start)
end

action :restart do
  run_agent(:restart)
end

action :stop do
  path = systemd? ? "/etc/systemd/system/#{service_name}.service" : "/etc/init.d/#{service_name}"
  service service_name do
    provider Chef::Provider::Service::Debian unless systemd?
    supports status: true, restart: true
    action [:stop, :disable]
    only_if { ::File.exist?(path) }
  end
end
