# frozen_string_literal: true

#
# Cookbook:: convergent
# Library:: example_web
#
# What the example recipes do for each desired state of the `web` cluster,
# decided from the `convergent` object alone, so that both patterns
# (compile time and converge time) share it and it is tested without Chef.
# Bad data is refused here, before it reaches a path, a shell script or a
# config file.

require_relative 'error'

module Convergent
  # The example service `convergent-web`.
  module ExampleWeb
    STATES = %w(off waiting converged).freeze
    ROOT = '/opt/convergent-web'
    CONFIG_FILE = '/etc/convergent-web/app.conf'
    STATE_DIR = '/var/lib/convergent-web'
    INIT_SCRIPT = '/etc/init.d/convergent-web'
    # A version becomes a folder name and goes into a shell script.
    VERSION = /\A[0-9A-Za-z][0-9A-Za-z._+-]{0,63}\z/.freeze

    # What to declare for one desired state.
    #
    # - state:     "off", "waiting" or "converged"
    # - install:   lay down `version` and its config (waiting, converged)
    # - run:       service enabled and running (converged); otherwise stopped and disabled
    # - release:   the folder of `version`
    # - config:    the variables of app.conf.erb
    # - source:    "store" or "cache": where the desired state came from
    Plan = Struct.new(:state, :version, :install, :run, :release, :config, :source, keyword_init: true)

    module_function

    # @param result [Hash] the `convergent` object (Convergent::Client#attributes)
    # @return [Plan]
    # @raise [Convergent::Error] for a state or value the example cannot apply
    def plan(result)
      cluster = result['cluster']
      state = result['state']
      desired = result['desired']
      unless STATES.include?(state)
        raise Error, "cluster #{cluster}: desired state #{state.inspect} is not one of #{STATES.join(', ')}"
      end
      install = state != 'off'
      version = desired['version'].to_s
      if install && !version.match?(VERSION)
        raise Error, "cluster #{cluster}: desired version #{desired['version'].inspect} is not a version " \
                     '(letters, digits, . _ + -)'
      end
      app = desired['app'].is_a?(Hash) ? desired['app'] : {}
      Plan.new(
        state: state,
        version: version,
        install: install,
        run: state == 'converged',
        release: "#{ROOT}/releases/#{version}",
        config: {
          cluster: cluster,
          version: version,
          port: integer(app, 'port', 8080, cluster),
          workers: integer(app, 'workers', 1, cluster),
          log_level: log_level(desired, cluster),
        },
        source: result['source']['stale'] ? 'cache' : 'store'
      )
    end

    # The variables of convergent-web.erb for a release.
    def daemon_variables(version)
      { version: version, state_file: "#{STATE_DIR}/running", config_file: CONFIG_FILE }
    end

    # The variables of convergent-web.init.erb.
    def init_variables
      {
        daemon: "#{ROOT}/current/convergent-web",
        pid_file: '/var/run/convergent-web.pid',
        log_file: '/var/log/convergent-web.log',
      }
    end

    def log_level(desired, cluster)
      level = desired.fetch('log_level', 'info').to_s
      return level if level.match?(/\A[a-z]+\z/)
      raise Error, "cluster #{cluster}: desired log_level #{desired['log_level'].inspect} is not a word such as info"
    end

    def integer(app, key, default, cluster)
      value = app.fetch(key, default)
      return value if value.is_a?(Integer) && value.positive?
      raise Error, "cluster #{cluster}: desired app.#{key} #{value.inspect} is not a positive integer"
    end
  end
end
