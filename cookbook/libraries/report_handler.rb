# frozen_string_literal: true

#
# Cookbook:: convergent
# Library:: report_handler
#
# The check-in at the end of a Chef run: `convergent report` for each
# attributes file the run used. `recipes/report.rb` calls it from Chef's
# event handlers. A report that cannot be made is logged as a warning and
# never changes how the run ended.

require 'json'
require_relative 'client'
require_relative 'run_state'

module Convergent
  # Reports a finished run.
  class ReportHandler
    # Reports a run and swallows every error (logging it): the entry point
    # for Chef's event handlers.
    #
    # @param node [#[], #run_state] the run's node
    # @param status [:success, :failure]
    # @param exception [Exception, nil] why the run failed
    # @param duration [Numeric, nil] seconds the run took
    # @param why_run [Boolean] a why-run applied nothing: it never checks in
    def self.report_run(node, status:, exception: nil, duration: nil, logger: nil, env: ENV,
                        why_run: RunState.why_run?)
      logger ||= defined?(::Chef::Log) ? ::Chef::Log : Logger.new($stderr)
      if why_run
        # A check-in says what the node converged to; a rollout releases
        # its next batch on it.
        logger.warn("convergent: why-run: no check-in written (the run's #{status} applied nothing)")
        return []
      end
      new(node['convergent'], node.run_state, logger: logger, env: env)
        .report(status: status, exception: exception, duration: duration)
    rescue StandardError => e
      logger.warn("convergent: the run's #{status} was not reported: #{e.class}: #{e.message}")
      []
    end

    def initialize(settings, run_state, logger:, env: ENV)
      @settings = settings
      @run_state = RunState.new(run_state)
      @logger = logger
      @env = env
    end

    # Reports `status` for every attributes file of this run.
    #
    # A failed run reports only the exception's class: its message may hold
    # anything, secrets included.
    #
    # @return [Array<Array(String, String)>] [file, outcome] for each file
    def report(status:, exception: nil, duration: nil)
      files = attributes_files(status)
      if files.empty?
        @logger.info('convergent: this run read no desired state: nothing to report')
        return []
      end
      client = Client.from_settings(@settings, credentials: @run_state.credentials, logger: @logger)
      message = exception && exception.class.name
      files.map do |cluster, file|
        begin
          checks = checks_file(cluster, file)
          out = client.report(status: status, attributes_file: file, message: message, duration: duration,
                              checks_file: checks)
          @logger.info("convergent: reported #{status}: #{out}")
          [file, out]
        rescue StandardError => e
          @logger.warn("convergent: could not report #{status} for cluster #{cluster} from #{file}: #{e.message}")
          [file, e]
        end
      end
    end

    private

    # cluster => file: those this run wrote; the one `convergent watch`
    # started the run with ($CONVERGENT_ATTRIBUTES) unless the run read that
    # cluster itself; for a run that failed before reading anything, the
    # configured cluster's file from an earlier run.
    def attributes_files(status)
      files = @run_state.attributes_files
      watch_file = @env['CONVERGENT_ATTRIBUTES']
      if watch_file && ::File.file?(watch_file)
        cluster = cluster_of(watch_file)
        files[cluster] ||= watch_file if cluster
      end
      if files.empty? && status.to_s == 'failure' && @settings['cluster']
        earlier = ::File.join(@settings['attributes_dir'].to_s, "#{@settings['cluster']}.json")
        files[@settings['cluster']] = earlier if ::File.file?(earlier)
      end
      files
    end

    # Writes the health checks the run declared for `cluster` next to its
    # attributes file (CLUSTER.checks.json, atomically, mode 0640) for
    # `report` and for `convergent health` / `watch --checks` between runs;
    # nil when the run declared none (a file left by an earlier run goes:
    # its checks are no longer the recipe's).
    def checks_file(cluster, attributes_file)
      path = ::File.join(::File.dirname(attributes_file), "#{cluster}.checks.json")
      checks = @run_state.checks(cluster)
      if checks.empty?
        ::File.delete(path) if ::File.exist?(path)
        return nil
      end
      tmp = "#{path}.tmp-#{Process.pid}"
      ::File.open(tmp, ::File::WRONLY | ::File::CREAT | ::File::TRUNC, 0o640) do |f|
        f.write(JSON.pretty_generate('checks' => checks))
      end
      ::File.rename(tmp, path)
      path
    end

    def cluster_of(file)
      JSON.parse(::File.read(file)).dig('convergent', 'cluster')
    rescue StandardError => e
      @logger.warn("convergent: cannot read #{file} ($CONVERGENT_ATTRIBUTES): #{e.message}")
      nil
    end
  end
end
