# frozen_string_literal: true

#
# Cookbook:: convergent
# Library:: dsl
#
# Helpers for recipes, resources and `lazy {}` blocks. Everything the
# binary says is read through Convergent::Client; these only decide which
# cluster, node and files, and keep the results for the run.
#
#   convergent_desired('web')    # => {"state"=>"converged", "version"=>"2.4.1", ...}
#   convergent_state('web')      # => "converged"
#
# The first call for a cluster runs `convergent attributes` (at compile time
# when called from a recipe body); later calls in the same run return the
# same result. `convergent_read` always asks again (for a `ruby_block`).

require_relative 'client'
require_relative 'run_state'

module Convergent
  # The recipe DSL; needs only `node` (attributes, name, run_state).
  module DSL
    # A client configured from `node['convergent']`, with the credentials a
    # recipe put in `node.run_state['convergent_credentials']`.
    def convergent_client
      Convergent::Client.from_settings(
        node['convergent'],
        credentials: RunState.new(node.run_state).credentials,
        logger: convergent_logger
      )
    end

    # This node's name in the view: `node['convergent']['node']`, else the
    # Chef node name.
    def convergent_node_name
      node['convergent']['node'] || node.name
    end

    # Where the attributes file of `cluster` is written (and reported from).
    def convergent_attributes_file(cluster)
      ::File.join(node['convergent']['attributes_dir'], "#{cluster}.json")
    end

    # Runs `convergent attributes` for `cluster` now, keeps the result in
    # `node.run_state['convergent'][cluster]` and returns it (the whole
    # `convergent` object). Raises Convergent::Error on failure.
    #
    # A why-run reads but writes no attributes file: it applies nothing, so
    # there is nothing for a check-in to report.
    def convergent_read(cluster)
      file = RunState.why_run? ? nil : convergent_attributes_file(cluster)
      result = convergent_client.attributes(cluster: cluster, node: convergent_node_name, output: file)
      RunState.new(node.run_state).store(cluster, result, file)
    end

    # The `convergent` object for `cluster`: read once per run.
    def convergent_result(cluster)
      RunState.new(node.run_state)[cluster] || convergent_read(cluster)
    end

    # This node's resolved desired document for `cluster`.
    def convergent_desired(cluster)
      convergent_result(cluster)['desired']
    end

    # This node's desired `state` for `cluster` ("off", "waiting", ...).
    def convergent_state(cluster)
      convergent_result(cluster)['state']
    end

    # The generation of this node's desired document.
    def convergent_generation(cluster)
      convergent_result(cluster)['generation']
    end

    # True when the result came from the last-known-good cache.
    def convergent_stale?(cluster)
      convergent_result(cluster)['source']['stale'] == true
    end

    private

    def convergent_logger
      defined?(::Chef::Log) ? ::Chef::Log : nil
    end
  end
end

# In a Chef run: recipes and resource actions (Chef::DSL::Recipe, which
# Chef extends to the classes that already include it), and resources, so
# that `lazy {}` values, guards and ruby_block blocks have them too.
::Chef::DSL::Recipe.include(::Convergent::DSL) if defined?(::Chef::DSL::Recipe)
::Chef::Resource.include(::Convergent::DSL) if defined?(::Chef::Resource)
