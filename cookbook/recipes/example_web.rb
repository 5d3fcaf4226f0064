#
# Cookbook:: convergent
# Recipe:: example_web
#
# The canonical pattern, at compile time: read this node's desired state for
# the `web` cluster once, while the recipe compiles, and declare resources
# whose actions follow from it. The recipe never orchestrates: whatever the
# view says when the node runs is what it converges to.
#
#   off        service stopped and disabled; nothing else changes
#   waiting    the desired version installed and configured; service stopped and disabled
#   converged  the desired version installed and configured; service enabled and running
#
# Needs the binary at compile time: put convergent::default (which installs
# it while compiling) before this recipe.

cluster = node['convergent']['example_web']['cluster']
plan = Convergent::ExampleWeb.plan(convergent_result(cluster))

include_recipe 'convergent::_example_web_base'

if plan.install
  directory plan.release do
    owner 'root'
    group 'root'
    mode '0755'
  end

  template ::File.join(plan.release, 'convergent-web') do
    source 'convergent-web.erb'
    owner 'root'
    group 'root'
    mode '0755'
    variables Convergent::ExampleWeb.daemon_variables(plan.version)
    notifies :restart, 'service[convergent-web]' if plan.run
  end

  link ::File.join(Convergent::ExampleWeb::ROOT, 'current') do
    to plan.release
    notifies :restart, 'service[convergent-web]' if plan.run
  end

  template Convergent::ExampleWeb::CONFIG_FILE do
    source 'app.conf.erb'
    owner 'root'
    group 'root'
    mode '0644'
    variables plan.config
    notifies :restart, 'service[convergent-web]' if plan.run
  end
end

# Where this run's desired state came from, for monitoring: "cache" while
# the store is unreachable (the run also logs a warning with its age).
file ::File.join(Convergent::ExampleWeb::STATE_DIR, 'desired-source') do
  content "#{plan.source}\n"
  mode '0644'
end

service 'convergent-web' do
  provider Chef::Provider::Service::Debian
  supports status: true, restart: true
  action plan.run ? [:enable, :start] : [:stop, :disable]
end
