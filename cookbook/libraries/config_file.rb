# frozen_string_literal: true

#
# Cookbook:: convergent
# Library:: config_file
#
# The binary's config file (/etc/convergent/config.yml): exactly the fields
# it accepts (src/config.rs; an unknown field is exit 78), rendered and read
# back by the `convergent_config` resource.

require 'json'
require 'yaml'
require_relative 'error'
require_relative 'store_url'

module Convergent
  # Renders, parses and compares config files.
  module ConfigFile
    # Resource property => config file field, in the binary's order. Two
    # are renamed: `node` and `format` are taken by Chef and by Kernel.
    PROPERTIES = {
      store: 'store', prefix: 'prefix', output_format: 'format', cache_dir: 'cache_dir',
      max_stale: 'max_stale', on_unreachable: 'on_unreachable', timeout: 'timeout',
      cluster: 'cluster', node_name: 'node', member_ttl: 'member_ttl'
    }.freeze
    FIELDS = PROPERTIES.values.freeze
    # What the binary's duration parser takes: 30s, 10m, 24h, 1h30m, 1h 30m.
    DURATION = /\A(0|(\d+\s*[a-zµ]+\s*)+)\z/i.freeze
    HEADER = "# Written by Chef (convergent_config): changes made here are overwritten.\n"

    module_function

    # The config file's fields from a resource (or anything answering the
    # property names), with the token file applied to the store URL.
    def fields(resource, token_file: nil)
      out = PROPERTIES.each_with_object({}) do |(property, field), h|
        value = resource.public_send(property)
        h[field] = value.to_s unless value.nil?
      end
      out['store'] = StoreUrl.with_token_file(out['store'], token_file).first if token_file && out['store']
      out
    end

    # The file's text. Every value is a double-quoted string, which YAML
    # reads back exactly (no `off` turning into false).
    def render(fields)
      unknown = fields.keys - FIELDS
      raise ArgumentError, "unknown config file fields: #{unknown.join(', ')}" unless unknown.empty?
      HEADER + FIELDS.select { |f| fields.key?(f) }.map { |f| "#{f}: #{JSON.generate(fields[f].to_s)}\n" }.join
    end

    # The fields of a config file's text; with `token_file`, the store URL
    # option it added is taken off again, so that the result compares with
    # what a resource declares.
    def parse(text, token_file: nil)
      data = YAML.safe_load(text) || {}
      raise Error, 'the config file is not a mapping of fields' unless data.is_a?(Hash)
      data = data.transform_values { |v| v.nil? ? nil : v.to_s }.compact
      if token_file && data['store']
        data['store'] = data['store'].sub(/[?&]password_file=#{Regexp.escape(token_file)}\z/, '')
      end
      data
    end

    # Human-readable changes from `current` (nil: no file) to `desired`.
    def changes(current, desired)
      return ["create with #{desired.keys.join(', ')}"] if current.nil?
      (FIELDS & (current.keys | desired.keys)).filter_map do |field|
        from = current[field]
        to = desired[field]
        next if from == to
        if to.nil? then "remove #{field} (was #{from.inspect})"
        elsif from.nil? then "set #{field} to #{to.inspect}"
        else "set #{field} to #{to.inspect} (was #{from.inspect})"
        end
      end
    end

    # Replaces `path` atomically: a temporary file in the same folder,
    # flushed to disk, then renamed over it.
    def write(path, text, mode: 0o644)
      tmp = "#{path}.tmp-#{Process.pid}"
      ::File.open(tmp, ::File::WRONLY | ::File::CREAT | ::File::EXCL, mode) do |f|
        f.write(text)
        f.flush
        f.fsync
      end
      ::File.chmod(mode, tmp) # whatever the umask
      ::File.rename(tmp, path)
    ensure
      ::File.unlink(tmp) if tmp && ::File.exist?(tmp)
    end
  end
end
