# frozen_string_literal: true

#
# Cookbook:: convergent
# Library:: run_state
#
# What one Chef run has read, kept in `node.run_state` (a Hash that lives
# for one run and is never saved to the Chef server):
#
#   node.run_state['convergent'][CLUSTER]                  the `convergent` object of `attributes`
#   node.run_state['convergent_attributes_files'][CLUSTER] the attributes file it was written to
#   node.run_state['convergent_health_checks'][CLUSTER]    the health checks the run declared
#   node.run_state['convergent_credentials']               secret environment variables for the binary
#   node.run_state['convergent_token']                     the secret convergent::config writes to token_file
#
# The report handler reports from the files; recipes read the results.

module Convergent
  # A view of `node.run_state` for the cookbook's keys.
  class RunState
    RESULTS = 'convergent'
    FILES = 'convergent_attributes_files'
    # Secret environment variables for the binary, set by a recipe (e.g.
    # from chef-vault); run_state because node attributes are saved.
    CREDENTIALS = 'convergent_credentials'
    CHECKS = 'convergent_health_checks'

    # The store's secret that convergent::config writes to the token file.
    TOKEN = 'convergent_token'

    # True in a why-run (`chef-client --why-run`): nothing is applied, so
    # nothing is written and no check-in is made.
    def self.why_run?
      defined?(::Chef::Config) ? ::Chef::Config[:why_run] == true : false
    end

    def initialize(run_state)
      @run_state = run_state
    end

    # The result read for `cluster` in this run, or nil.
    def [](cluster)
      (@run_state[RESULTS] || {})[cluster]
    end

    # Records a result and the attributes file it came from.
    def store(cluster, result, attributes_file)
      (@run_state[RESULTS] ||= {})[cluster] = result
      (@run_state[FILES] ||= {})[cluster] = attributes_file if attributes_file
      result
    end

    # Forgets what was read for `cluster`, so that the next read asks again.
    def forget(cluster)
      (@run_state[RESULTS] || {}).delete(cluster)
      (@run_state[FILES] || {}).delete(cluster)
    end

    # cluster => attributes file, for every cluster read in this run.
    def attributes_files
      (@run_state[FILES] || {}).dup
    end

    # Declares a health check of `cluster` (convergent_health_check).
    def declare_check(cluster, name, spec)
      ((@run_state[CHECKS] ||= {})[cluster] ||= {})[name] = spec
    end

    # name => check spec declared for `cluster` in this run, or {}.
    def checks(cluster)
      ((@run_state[CHECKS] || {})[cluster] || {}).dup
    end

    # The secret environment variables recipes put there, or {}.
    def credentials
      @run_state[CREDENTIALS] || {}
    end

    # The store's secret a recipe put there for the token file, or nil.
    def token
      @run_state[TOKEN]
    end
  end
end
