# frozen_string_literal: true

#
# Cookbook:: convergent
# Resource:: convergent_installation
#
# Installs the convergent binary at `path` (root-owned, 0755) from one of:
#
# - a release tarball (scripts/release): unpacked into
#   /opt/convergent/VERSION-TARGET, `path` linked to its binary; other
#   versions' folders are removed, so an upgrade or a downgrade is one link
#   change;
# - the Debian package: installed with dpkg (upgrades and downgrades alike),
#   `path` linked to /usr/bin/convergent unless it is that;
# - a raw binary: copied to `path`.
#
# The source may name %{version}, %{target} (x86_64-unknown-linux-musl…),
# %{arch} (amd64, arm64) and %{machine}, filled in from `version` and
# node['kernel']['machine']. A URL needs its sha256: a download is only
# trusted through its digest.
#
#   convergent_installation '/usr/local/bin/convergent' do
#     source 'https://artifacts.example.com/convergent/%{version}/convergent-%{version}-%{target}.tar.gz'
#     version '0.1.0'
#     sha256 'x86_64' => '3f5c…', 'aarch64' => '9b1e…'
#   end

provides :convergent_installation
unified_mode true

property :path, String, name_property: true,
         description: 'Where the binary goes (default: the resource name, e.g. /usr/local/bin/convergent)'
property :source, String, required: true, desired_state: false,
         description: 'An absolute local path, a file:// or http(s) URL; may name %{version}, %{target}, %{arch}, %{machine}'
property :version, String, regex: Convergent::Release::VERSION, desired_state: false,
         description: 'The release: fills %{version}, names the tarball folder; required for a tarball'
property :sha256, [String, Hash], desired_state: false,
         callbacks: {
           'must be 64 hex digits, or a Hash of them by machine' => lambda { |v|
             Array(v.is_a?(Hash) ? v.values : v).all? { |d| d.to_s.match?(Convergent::InstallationSource::SHA256) }
           },
         },
         description: 'sha256 of the file the source names; a Hash picks by node["kernel"]["machine"] or Debian arch'
property :packaging, String, equal_to: Convergent::Release::FORMATS, desired_state: false,
         description: 'tarball, deb or binary (default: from the file name)'
property :machine, String, desired_state: false, default: lazy { node['kernel']['machine'] },
         description: "The architecture to install for (default: node['kernel']['machine'])"

default_action :install

action_class do
  def source_url
    expanded = Convergent::Release.expand(new_resource.source, version: new_resource.version, machine: new_resource.machine)
    Convergent::InstallationSource.url(expanded, sha256)
  end

  def sha256
    new_resource.sha256 && Convergent::Release.sha256_for(new_resource.sha256, new_resource.machine)
  end

  def install_format
    new_resource.packaging || Convergent::Release.format_of(source_url)
  end

  # The downloaded artifact, kept in Chef's cache under its own name, so that
  # an unchanged artifact is neither fetched nor unpacked again.
  def fetch_artifact(url)
    local = ::File.join(Chef::Config[:file_cache_path], 'convergent', ::File.basename(url))
    directory ::File.dirname(local) do
      recursive true
    end
    remote_file local do
      source url
      checksum sha256 if sha256
      owner 'root'
      group 'root'
      mode '0644'
    end
    local
  end

  def link_binary(to)
    directory ::File.dirname(new_resource.path) do
      owner 'root'
      group 'root'
      mode '0755'
      recursive true
    end
    link new_resource.path do
      to to
    end
  end

  def install_tarball(url)
    raise Convergent::Error, "#{new_resource}: a tarball needs the resource's version" unless new_resource.version
    tarball = fetch_artifact(url)
    target, = Convergent::Release.arch_of(new_resource.machine)
    root = '/opt/convergent'
    dir = ::File.join(root, "#{new_resource.version}-#{target}")
    digest_file = ::File.join(dir, '.tarball-sha256')

    directory root do
      owner 'root'
      group 'root'
      mode '0755'
    end
    # Unpacked beside the folder, then renamed into place: a folder that
    # exists is complete. Unpacked again only when the tarball changed.
    ruby_block "unpack #{::File.basename(tarball)} into #{dir}" do
      block do
        Convergent::Release.unpack(tarball, dir, top: "convergent-#{new_resource.version}-#{target}")
        ::File.chmod(0o755, dir)
      end
      not_if do
        ::File.exist?(digest_file) &&
          ::File.read(digest_file).strip == Convergent::InstallationSource.sha256_of(tarball)
      end
    end
    link_binary(::File.join(dir, 'convergent'))
    # Other versions go: the link above is the only one that counts.
    Dir.glob(::File.join(root, '*')).reject { |d| d == dir }.each do |old|
      directory old do
        recursive true
        action :delete
      end
    end
  end

  def install_deb(url)
    deb = fetch_artifact(url)
    dpkg_package 'convergent' do
      source deb
      # The version the file holds: an installed package of any other
      # version, older or newer, is replaced by it.
      version lazy { Convergent::Release.deb_version(deb) }
      allow_downgrade true if respond_to?(:allow_downgrade)
    end
    link_binary('/usr/bin/convergent') unless new_resource.path == '/usr/bin/convergent'
  end

  def install_binary(url)
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
      checksum sha256 if sha256
      owner 'root'
      group 'root'
      mode '0755'
    end
  end
end

action :install do
  url = source_url
  case install_format
  when 'tarball' then install_tarball(url)
  when 'deb' then install_deb(url)
  else install_binary(url)
  end
end

action :remove do
  case install_format
  when 'deb'
    dpkg_package 'convergent' do
      action :remove
    end
    link new_resource.path do
      action :delete
      only_if { ::File.symlink?(new_resource.path) }
    end
  when 'tarball'
    link new_resource.path do
      action :delete
      only_if { ::File.symlink?(new_resource.path) }
    end
    directory '/opt/convergent' do
      recursive true
      action :delete
    end
  else
    file new_resource.path do
      action :delete
    end
  end
end
