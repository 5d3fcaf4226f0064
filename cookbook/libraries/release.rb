# frozen_string_literal: true

#
# Cookbook:: convergent
# Library:: release
#
# The release artifacts `convergent_installation` installs (scripts/release
# makes them): which file fits this machine, and the digest it must have.
#
#   convergent-VERSION-TARGET.tar.gz   TARGET: x86_64-unknown-linux-musl, aarch64-unknown-linux-musl
#   convergent_VERSION_ARCH.deb        ARCH: amd64, arm64
#
# Plain Ruby: used by Chef recipes and by the minitest suite alike.

require 'digest'
require 'fileutils'
require 'mixlib/shellout'
require_relative 'error'

module Convergent
  # Artifact names, architectures and the per-node splay.
  module Release
    # node['kernel']['machine'] => [Rust target, Debian architecture]
    MACHINES = {
      'x86_64' => %w(x86_64-unknown-linux-musl amd64),
      'amd64' => %w(x86_64-unknown-linux-musl amd64),
      'aarch64' => %w(aarch64-unknown-linux-musl arm64),
      'arm64' => %w(aarch64-unknown-linux-musl arm64),
    }.freeze

    # How a source is installed, from its file name.
    FORMATS = %w(binary tarball deb).freeze

    VERSION = /\A[0-9A-Za-z.+~-]+\z/.freeze

    module_function

    # [Rust target, Debian architecture] of a machine, or an error naming it.
    def arch_of(machine)
      MACHINES.fetch(machine.to_s) do
        raise Error, "no convergent release for machine #{machine.inspect} (node['kernel']['machine']): " \
                     "there are #{MACHINES.keys.join(', ')}"
      end
    end

    # The source with %{version}, %{target}, %{arch} (Debian) and %{machine}
    # filled in, e.g. 'https://a.example.com/convergent/%{version}/convergent-%{version}-%{target}.tar.gz'.
    def expand(source, version:, machine:)
      raise Error, "version #{version.inspect} is not a version" if version && !version.match?(VERSION)
      target, arch = arch_of(machine)
      if source.include?('%{version}') && !version
        raise Error, "source #{source} names %{version}: set the resource's version"
      end
      values = { 'version' => version.to_s, 'target' => target, 'arch' => arch, 'machine' => machine.to_s }
      source.gsub(/%\{(\w*)\}/) do
        values.fetch(Regexp.last_match(1)) do |key|
          raise Error, "source #{source}: no placeholder %{#{key}} (it may use %{version}, %{target}, %{arch}, %{machine})"
        end
      end
    end

    # tarball, deb or binary: what the file name says.
    def format_of(url)
      case url
      when /\.tar\.gz\z|\.tgz\z/ then 'tarball'
      when /\.deb\z/ then 'deb'
      else 'binary'
      end
    end

    # The digest for this machine: a String as it is, a Hash by machine
    # ('x86_64', 'aarch64') or by Debian architecture.
    def sha256_for(sha256, machine)
      return sha256 unless sha256.is_a?(Hash)
      _, arch = arch_of(machine)
      sha256[machine.to_s] || sha256[arch] ||
        raise(Error, "sha256 has no digest for #{machine} (keys: #{sha256.keys.join(', ')})")
    end

    # Bound on running tar or dpkg-deb, in seconds.
    TOOL_TIMEOUT = 120

    # The package version a .deb holds (`dpkg-deb -f DEB Version`).
    def deb_version(deb)
      run!(%w(dpkg-deb -f) + [deb, 'Version']).stdout.strip
    end

    # Unpacks a release tarball's top folder `top` into `dir`, whole or not
    # at all: into a sibling folder first, then renamed into place (an older
    # `dir` is replaced). Records the tarball's sha256 in `dir`/.tarball-sha256.
    def unpack(tarball, dir, top:)
      staging = "#{dir}.new"
      FileUtils.rm_rf(staging)
      FileUtils.mkdir_p(staging, mode: 0o755)
      run!(['tar', '-xzf', tarball, '-C', staging, '--no-same-owner', top])
      binary = File.join(staging, top, 'convergent')
      raise Error, "#{tarball} has no #{top}/convergent" unless File.file?(binary)
      File.write(File.join(staging, top, '.tarball-sha256'), "#{Digest::SHA256.file(tarball).hexdigest}\n")
      FileUtils.rm_rf(dir)
      File.rename(File.join(staging, top), dir)
      FileUtils.rm_rf(staging)
      dir
    end

    def run!(argv)
      command = Mixlib::ShellOut.new(*argv, timeout: TOOL_TIMEOUT)
      command.run_command
      unless command.status&.success?
        raise Error.new("#{Convergent.command_line(argv)} failed: #{command.stderr.strip}",
                        exit_code: command.status&.exitstatus, command: argv, stderr: command.stderr)
      end
      command
    rescue Mixlib::ShellOut::CommandTimeout
      raise TimeoutError.new("#{Convergent.command_line(argv)} ran past #{TOOL_TIMEOUT}s", command: argv)
    end

    # The share of its splay a node waits with `--splay-from node`, in [0, 1):
    # the rank of the node in the id `splay/CLUSTER`, as the binary computes it.
    def splay_share(cluster, node)
      (Digest::SHA256.digest("splay/#{cluster}/#{node}")[0, 8].unpack1('Q>') >> 11) / 2.0**53
    end
  end
end
