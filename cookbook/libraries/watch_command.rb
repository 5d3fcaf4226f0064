# frozen_string_literal: true

#
# Cookbook:: convergent
# Library:: watch_command
#
# The command line of the node agent (`convergent watch`) that
# `convergent_watch` runs as a service, and its quoting for a systemd unit
# and for a shell init script.
#
# Plain Ruby: used by Chef recipes and by the minitest suite alike.

require 'shellwords'
require_relative 'error'
require_relative 'store_url'

module Convergent
  # `convergent watch` as an argument vector.
  module WatchCommand
    DURATION = /\A\d+(\.\d+)?(ms|s|m|h|d)?\z/.freeze

    module_function

    # The argument vector; nil settings are left to the binary's config file.
    def argv(binary:, cluster:, node:, exec:, args: [], store: nil, splay: '0s', splay_from: 'node',
             interval: '5m', output: nil, cache_dir: nil)
      { splay: splay, interval: interval }.each do |name, value|
        raise Error, "convergent_watch #{cluster}: #{name} #{value.inspect} is not a duration (e.g. 30s, 5m)" unless value.match?(DURATION)
      end
      Convergent::StoreUrl.check!(store) if store
      argv = [binary]
      argv += ['--store', store] if store
      argv += ['--cache-dir', cache_dir] if cache_dir
      argv += ['watch', '--cluster', cluster, '--node', node, '--splay', splay, '--splay-from', splay_from,
               '--interval', interval]
      argv += ['--output', output] if output
      argv += ['--exec', exec]
      argv += ['--'] + args unless args.empty?
      argv
    end

    # One systemd ExecStart= value: each word double-quoted, with systemd's
    # escapes for \ and ", and $ and % doubled so that neither is expanded.
    def systemd_exec(argv)
      argv.map { |w| "\"#{w.gsub('\\', '\\\\\\\\').gsub('"', '\\"').gsub('$', '$$').gsub('%', '%%')}\"" }.join(' ')
    end

    # One systemd Environment= value (no $ expansion there, % specifiers yes).
    def systemd_env(name, value)
      raise Error, "environment variable name #{name.inspect} is not a name" unless name.to_s.match?(/\A[A-Za-z_][A-Za-z0-9_]*\z/)
      "\"#{name}=#{value.to_s.gsub('\\', '\\\\\\\\').gsub('"', '\\"').gsub('%', '%%')}\""
    end

    # The same for /bin/sh.
    def shell(argv)
      argv.map { |w| Shellwords.escape(w) }.join(' ')
    end
  end
end
