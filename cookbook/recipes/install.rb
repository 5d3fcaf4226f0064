#
# Cookbook:: convergent
# Recipe:: install
#
# Installs the binary from node['convergent']['install']['source']. By
# default it does so while the recipes compile, so that compile-time reads
# (convergent_desired) already find it on a node's first run.

install_source = node['convergent']['install']['source']
install_sha256 = node['convergent']['install']['sha256']
install_sha256 = install_sha256.to_h if install_sha256.is_a?(Hash)

if install_source
  installation = convergent_installation node['convergent']['binary'] do
    source install_source
    version node['convergent']['install']['version'] if node['convergent']['install']['version']
    sha256 install_sha256 if install_sha256
  end
  installation.run_action(:install) if node['convergent']['install']['compile_time']
else
  # A log resource would count as an update in every run.
  Chef::Log.debug("convergent: no install source set; the binary is expected at #{node['convergent']['binary']}")
end
