#
# Cookbook:: convergent
# Recipe:: example_web_converge_time
#
# The same service as convergent::example_web, with the desired state read
# at converge time: a ruby_block runs `convergent attributes` after the
# resources before it have run (here the binary itself is installed, and its
# config file written, earlier in this same run), stores the result in
# node.run_state['convergent'][cluster], and later resources read it
# through lazy {} and only_if guards.
#
# A ruby_block reports itself as updated in every run (README, "Two
# patterns").

cluster = node['convergent']['example_web']['cluster']
root = Convergent::ExampleWeb::ROOT

if node['convergent']['install']['source']
  convergent_installation node['convergent']['binary'] do
    source node['convergent']['install']['source']
    sha256 node['convergent']['install']['sha256'] if node['convergent']['install']['sha256']
  end
end
include_recipe 'convergent::config'
include_recipe 'convergent::_example_web_base'

ruby_block "convergent: read the desired state of #{cluster}" do
  block do
    # Runs the binary now and stores the `convergent` object in
    # node.run_state['convergent'][cluster] (and its attributes file for the
    # report handler).
    convergent_read(cluster)
  end
end

# Read by the lazy values and guards below. convergent_result returns what
# the ruby_block read; in a why-run, where no ruby_block runs, it reads once
# itself, so that the run can say what it would do.
plan = -> { Convergent::ExampleWeb.plan(convergent_result(cluster)) }

directory 'convergent-web release' do
  path lazy { plan.call.release }
  owner 'root'
  group 'root'
  mode '0755'
  only_if { plan.call.install }
end

template 'convergent-web daemon' do
  path lazy { ::File.join(plan.call.release, 'convergent-web') }
  source 'convergent-web.erb'
  owner 'root'
  group 'root'
  mode '0755'
  variables lazy { Convergent::ExampleWeb.daemon_variables(plan.call.version) }
  only_if { plan.call.install }
  notifies :restart, 'service[convergent-web running]'
end

link ::File.join(root, 'current') do
  to lazy { plan.call.release }
  only_if { plan.call.install }
  notifies :restart, 'service[convergent-web running]'
end

template Convergent::ExampleWeb::CONFIG_FILE do
  source 'app.conf.erb'
  owner 'root'
  group 'root'
  mode '0644'
  variables lazy { plan.call.config }
  only_if { plan.call.install }
  notifies :restart, 'service[convergent-web running]'
end

file ::File.join(Convergent::ExampleWeb::STATE_DIR, 'desired-source') do
  content lazy { "#{plan.call.source}\n" }
  mode '0644'
end

# One service resource per outcome, chosen by guards; a notification to the
# running one is skipped too while its guard says no.
service 'convergent-web stopped' do
  service_name 'convergent-web'
  provider Chef::Provider::Service::Debian
  supports status: true, restart: true
  action [:stop, :disable]
  not_if { plan.call.run }
end

service 'convergent-web running' do
  service_name 'convergent-web'
  provider Chef::Provider::Service::Debian
  supports status: true, restart: true
  action [:enable, :start]
  only_if { plan.call.run }
end
