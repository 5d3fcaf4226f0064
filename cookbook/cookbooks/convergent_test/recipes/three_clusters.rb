#
# Cookbook:: convergent_test
# Recipe:: three_clusters
#
# A node whose `cluster` attribute is web (the quick start) and whose
# recipe also reads queue and search: every cluster it read checks in.

include_recipe 'convergent_test::_node'
include_recipe 'convergent::default'

directory '/var/lib/convergent-test'

%w(web queue search).each do |cluster|
  file "/var/lib/convergent-test/#{cluster}.version" do
    content "#{convergent_desired(cluster)['version']}\n"
    mode '0644'
  end
end
