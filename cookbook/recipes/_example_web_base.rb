#
# Cookbook:: convergent
# Recipe:: _example_web_base
#
# What the example service has in every state: its folders and its init
# script. Included by both example recipes.

unless platform_family?('debian')
  raise 'convergent::example_web manages its service with update-rc.d: it runs on Debian and Ubuntu'
end

[::File.join(Convergent::ExampleWeb::ROOT, 'releases'),
 ::File.dirname(Convergent::ExampleWeb::CONFIG_FILE),
 Convergent::ExampleWeb::STATE_DIR].each do |dir|
  directory dir do
    owner 'root'
    group 'root'
    mode '0755'
    recursive true
  end
end

template Convergent::ExampleWeb::INIT_SCRIPT do
  source 'convergent-web.init.erb'
  owner 'root'
  group 'root'
  mode '0755'
  variables Convergent::ExampleWeb.init_variables
end
