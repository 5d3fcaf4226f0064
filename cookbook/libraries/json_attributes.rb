# frozen_string_literal: true

#
# Cookbook:: convergent
# Library:: json_attributes
#
# A run started with the attributes file of `convergent attributes` passed
# with -j (`convergent watch --exec chef-client -- -j FILE`). Chef deep-merges
# a -j file into *normal* attributes, which are saved with the node: a key
# the view later removes (with null) would stay in node['convergent'] run
# after run, and the file's `cluster` would override the cookbook's setting.
# So the cookbook takes the view's reading out of node attributes before any
# recipe compiles (attributes/default.rb) and keeps it for the run only, in
# node.run_state, where convergent_result / convergent_desired find it and
# the report handler checks in from the file.

require_relative 'client'
require_relative 'error'
require_relative 'run_state'

module Convergent
  # Moves a -j attributes file out of normal attributes into run_state.
  module JsonAttributes
    # The keys of the `convergent` object that are the view's reading, never
    # the cookbook's settings.
    READING = %w(state desired generation rollout source).freeze
    # Keys that are also settings (node['convergent']['cluster'], ['node']):
    # taken out only when the -j file put them there.
    SHARED = %w(cluster node).freeze

    module_function

    # @param node [Chef::Node]
    # @param json_attribs [String, nil] the -j argument (Chef::Config[:json_attribs])
    # @return [Hash, nil] the reading of the -j file, if it is an attributes file
    # @raise [Convergent::Error] for a -j file that looks like one but is broken
    def take(node, json_attribs)
      result = reading(json_attribs)
      normal = node.normal.read('convergent')
      if normal.respond_to?(:key?)
        READING.each { |key| node.rm_normal('convergent', key) if normal.key?(key) }
        SHARED.each { |key| node.rm_normal('convergent', key) if result && normal.key?(key) && normal[key] == result[key] }
        node.rm_normal('convergent') if node.normal.read('convergent').empty?
      end
      RunState.new(node.run_state).store(result['cluster'], result, json_attribs) if result
      result
    end

    # The `convergent` object of the -j file when it is a local attributes
    # file (one with convergent.generation), else nil.
    def reading(json_attribs)
      return nil unless json_attribs.is_a?(String) && ::File.file?(json_attribs)
      text = ::File.read(json_attribs)
      document = JSON.parse(text)
      ours = document.is_a?(Hash) && document['convergent']
      return nil unless ours.is_a?(Hash) && ours.key?('generation')
      Client.parse_attributes(text)
    rescue JSON::ParserError
      nil # not ours to judge: Chef has read it already
    rescue Error => e
      raise Error, "#{json_attribs} (passed with -j) is not a whole convergent attributes document: #{e.message}"
    end
  end
end
