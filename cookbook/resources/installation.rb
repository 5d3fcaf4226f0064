# frozen_string_literal: true

#
# Cookbook:: convergent
# Resource:: convergent_installation
#
# Installs the convergent binary from a local path, or from a URL pinned by
# its sha256, to /usr/local/bin/convergent (root-owned, 0755).
#
#   convergent_installation '/usr/local/bin/convergent' do
#     source 'https://artifacts.example.com/convergent/0.1.0/convergent-x86_64-linux'
#     sha256 '3f5c...'
#   end

provides :convergent_installation
unified_mode true

property :path, String, name_property: true,
         description: 'Where the binary goes (default: the resource name, e.g. /usr/local/bin/convergent)'
property :source, String, required: true, desired_state: false,
         description: 'An absolute local path, or an http(s) URL'
property :sha256, String, regex: Convergent::InstallationSource::SHA256,
         description: 'sha256 of the binary: required for a URL, checked for a local path when set'

default_action :install

action :install do
  url = Convergent::InstallationSource.url(new_resource.source, new_resource.sha256)

  directory ::File.dirname(new_resource.path) do
    owner 'root'
    group 'root'
    mode '0755'
    recursive true
  end

  # remote_file compares digests and replaces the file atomically; with a
  # checksum it refuses a download that does not match.
  remote_file new_resource.path do
    source url
    checksum new_resource.sha256 if new_resource.sha256
    owner 'root'
    group 'root'
    mode '0755'
  end
end

action :remove do
  file new_resource.path do
    action :delete
  end
end
