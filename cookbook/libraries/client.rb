# frozen_string_literal: true

#
# Cookbook:: convergent
# Library:: client
#
# Convergent::Client runs the `convergent` binary and returns what it says as
# Ruby data. Plain Ruby (json, mixlib-shellout): Chef recipes use it through
# Convergent::DSL, and the minitest suite drives it against the real binary.
#
# - The binary is run from an argument vector, never through a shell, with
#   every value given as `--flag=value` so that no value is read as a flag.
# - Credentials reach it through the environment or a token file, never the
#   command line; the client also redacts them from any text it raises or logs.
# - Every run is bounded by `command_timeout`; the binary's own `--timeout`
#   bounds each store request and should be well below it.

require 'fileutils'
require 'json'
require 'logger'
require 'mixlib/shellout'
require_relative 'error'
require_relative 'store_url'

module Convergent
  # Runs the binary: `attributes`, `report`, `--version`, and the
  # orchestrator's `rollout run` / `rollout status` / `get plans/NAME`.
  class Client
    DEFAULT_BINARY = '/usr/local/bin/convergent'
    # Seconds a run of the binary may take before it is stopped.
    DEFAULT_COMMAND_TIMEOUT = 30
    GENERATION = /\A\h{16}\z/.freeze

    attr_reader :binary, :store, :command_timeout

    # The `convergent` object of an attributes document (what `attributes`
    # prints or writes with --output), frozen.
    #
    # @param command [Array<String>, nil] the command that printed it, for the error
    # @raise [Convergent::Error] for anything else
    def self.parse_attributes(text, command = nil)
      document = JSON.parse(text)
      result = document.is_a?(Hash) && document['convergent']
      unless result.is_a?(Hash) && result['desired'].is_a?(Hash) && result['source'].is_a?(Hash) &&
             result['generation'].to_s.match?(GENERATION) && result['cluster'].is_a?(String)
        raise Error.new('convergent attributes printed a document without cluster, desired, generation and source',
                        command: command)
      end
      deep_freeze(result)
    rescue JSON::ParserError => e
      raise Error.new("convergent attributes printed invalid JSON: #{e.message[0, 200]}", command: command)
    end

    def self.deep_freeze(value)
      case value
      when Hash then value.each_value { |v| deep_freeze(v) }
      when Array then value.each { |v| deep_freeze(v) }
      end
      value.freeze
    end
    private_class_method :deep_freeze

    # A client from settings shaped like the cookbook's `node['convergent']`
    # attributes (a Hash or Chef's attribute Mash, string keys).
    # `credentials` are secret environment variables (e.g.
    # `ETCDCTL_PASSWORD`); they do not belong in node attributes.
    def self.from_settings(settings, credentials: {}, logger: nil)
      new(
        binary: settings['binary'] || DEFAULT_BINARY,
        store: settings['store'],
        prefix: settings['prefix'],
        config_file: settings['config_file'],
        cache_dir: settings['cache_dir'],
        max_stale: settings['max_stale'],
        on_unreachable: settings['on_unreachable'],
        timeout: settings['timeout'],
        command_timeout: settings['command_timeout'] || DEFAULT_COMMAND_TIMEOUT,
        token_file: settings['token_file'],
        environment: settings['environment'] || {},
        credentials: credentials,
        logger: logger
      )
    end

    # A client from a resource with the connection properties of
    # resources/_partial/_connection.rb (convergent_report, convergent_rollout).
    def self.for_resource(resource, config_file:, logger: nil)
      new(binary: resource.binary, store: resource.store, prefix: resource.prefix, config_file: config_file,
          cache_dir: resource.cache_dir, timeout: resource.timeout, command_timeout: resource.command_timeout,
          token_file: resource.token_file, environment: resource.environment, credentials: resource.credentials,
          logger: logger)
    end

    # @param binary [String] path of the `convergent` binary
    # @param store [String, nil] store URL (nil: the config file's or the binary's default)
    # @param prefix [String, nil] key prefix
    # @param config_file [String, nil] passed as --config when the file exists
    # @param cache_dir [String, nil] folder of the last-known-good cache
    # @param max_stale [String, nil] oldest cached result to use, e.g. "24h"
    # @param on_unreachable ["cache", "fail", nil] what to do when the store is down
    # @param timeout [String, nil] the binary's bound on store requests, e.g. "5s"
    # @param command_timeout [Numeric] seconds before a run of the binary is stopped
    # @param token_file [String, nil] file holding the store's secret (etcd
    #   password, Consul token), readable by root only
    # @param environment [Hash] variables for the binary that are not secret
    #   (ETCDCTL_USER without a password, ETCDCTL_CACERT, ...)
    # @param credentials [Hash] secret variables (ETCDCTL_USER=user:password,
    #   ETCDCTL_PASSWORD, CONSUL_HTTP_TOKEN); redacted from every message
    # @param logger [#warn, #info, #debug, nil] Chef::Log in a Chef run
    def initialize(binary: DEFAULT_BINARY, store: nil, prefix: nil, config_file: nil, cache_dir: nil,
                   max_stale: nil, on_unreachable: nil, timeout: nil,
                   command_timeout: DEFAULT_COMMAND_TIMEOUT, token_file: nil,
                   environment: {}, credentials: {}, logger: nil)
      unless command_timeout.is_a?(Numeric) && command_timeout.positive?
        raise ArgumentError, "command_timeout must be a positive number of seconds, not #{command_timeout.inspect}"
      end
      if on_unreachable && !%w(cache fail).include?(on_unreachable.to_s)
        raise ArgumentError, "on_unreachable must be cache or fail, not #{on_unreachable.inspect}"
      end
      @binary = binary
      @store, token_env = StoreUrl.with_token_file(store, token_file)
      @prefix = prefix
      @config_file = config_file
      @cache_dir = cache_dir
      @max_stale = max_stale
      @on_unreachable = on_unreachable
      @timeout = timeout
      @command_timeout = command_timeout
      @environment = stringify(environment).merge(token_env)
      @credentials = stringify(credentials)
      @logger = logger || Logger.new(IO::NULL)
    end

    # Resolves a node's desired state: `convergent attributes`.
    #
    # With `output`, the binary writes the attributes file there atomically
    # (the file `report` needs later) and the client reads it back.
    #
    # A result served from the last-known-good cache (`source.stale`) is
    # returned like a fresh one and logged as a warning with its age.
    #
    # @return [Hash] the `convergent` object: cluster, node, state, desired,
    #   generation, rollout, source (string keys, frozen)
    # @raise [Convergent::Error] with the exit code, command and stderr
    def attributes(cluster:, node:, output: nil)
      args = ['attributes', "--cluster=#{cluster}", "--node=#{node}"]
      if output
        FileUtils.mkdir_p(::File.dirname(output), mode: 0o750)
        args << "--output=#{output}"
      end
      shell = run(args)
      text = output ? ::File.read(output) : shell.stdout
      result = self.class.parse_attributes(text, shell.command)
      warn_stale(result, shell.stderr) if result['source']['stale']
      result
    end

    # Records a check-in: `convergent report` from the attributes file a
    # run used.
    #
    # @param status ["success", "failure"]
    # @param message [String, nil] e.g. the exception class of a failed run
    # @param duration [Numeric, nil] seconds the run took
    # @return [String] what the binary printed, e.g.
    #   "convergent/observed/web/web-01: success at generation e19f2a67e710ae94 (state converged)"
    # @param checks_file [String, nil] the recipe's health checks
    #   (`{"checks": {NAME: CHECK}}`), run with the view's after a success
    def report(status:, attributes_file:, message: nil, duration: nil, checks_file: nil)
      status = status.to_s
      raise ArgumentError, "status must be success or failure, not #{status.inspect}" unless %w(success failure).include?(status)
      args = ['report', "--status=#{status}", "--attributes=#{attributes_file}"]
      args << "--message=#{message}" if message
      args << "--duration=#{format('%.1f', duration)}" if duration
      args << "--checks=#{checks_file}" if checks_file
      run(args).stdout.strip
    end

    # Runs a plan: `convergent rollout run PLAN` (or its `--dry-run`), which
    # starts it or resumes it where its records in the store say it stopped.
    #
    # @param plan_file [String] the plan (YAML)
    # @param dry_run [Boolean] print who goes when; write nothing
    # @param options [Hash] `poll`, `member_ttl`, `lock_wait` (durations, nil: the binary's)
    # @param timeout [Numeric, nil] seconds before the orchestrator is stopped
    #   (default `command_timeout`); stopped, it resumes on the next run
    # @param live_stdout [#<<, nil] receives its progress lines as they come
    # @return [String] what it printed on stdout
    # @raise [Convergent::Error] with the orchestrator's message (a paused or
    #   failed rollout, a lock held by another orchestrator, a bad plan)
    def rollout_run(plan_file, dry_run: false, options: {}, timeout: nil, live_stdout: nil)
      run(rollout_run_args(plan_file, dry_run: dry_run, options: options),
          timeout: timeout, live_stdout: live_stdout).stdout
    end

    # The arguments of `rollout run` (after the global ones).
    def rollout_run_args(plan_file, dry_run: false, options: {})
      args = ['rollout', 'run', plan_file]
      args << '--dry-run' if dry_run
      { 'poll' => options[:poll], 'member-ttl' => options[:member_ttl], 'lock-wait' => options[:lock_wait] }.each do |flag, value|
        args << "--#{flag}=#{value}" unless value.nil? || value.to_s.empty?
      end
      args
    end

    # A plan's record in the store (`P/plans/NAME`: `status`, `done`,
    # `steps`, history), or nil when the plan never started.
    def plan_record(name)
      JSON.parse(run(['--format=json', 'get', "plans/#{name}"]).stdout)
    rescue Error => e
      raise unless e.bad_data? && missing_key?(e.stderr, "plans/#{name}")
      nil
    end

    # Every active rollout (`rollout status --format json`): an Array of
    # `{"cluster", "step", "record" => {"id", "plan", "status", "batches", ...}, ...}`.
    def rollouts
      list = JSON.parse(run(['--format=json', 'rollout', 'status']).stdout)
      raise Error.new('convergent rollout status printed something other than a list') unless list.is_a?(Array)
      list
    end

    # Starts `args` in the background, detached from this process (its own
    # session, stdin /dev/null, stdout and stderr appended to `log_file`),
    # with start-stop-daemon: the pid goes to `pid_file`. Returns at once;
    # the process inherits the environment (credentials included), never
    # gets them on its command line.
    def start_detached(args, pid_file:, log_file:)
      [pid_file, log_file].each { |f| FileUtils.mkdir_p(::File.dirname(f), mode: 0o750) }
      daemon = ['start-stop-daemon', '--start', '--background', '--make-pidfile', "--pidfile=#{pid_file}",
                "--output=#{log_file}", "--exec=#{binary}", '--', *global_args, *args]
      shell = Mixlib::ShellOut.new(*daemon, timeout: command_timeout, environment: @environment.merge(@credentials))
      begin
        shell.run_command
      rescue SystemCallError, Mixlib::ShellOut::CommandTimeout => e
        raise Error.new("cannot start #{binary} in the background: #{redact(e.message)}", command: daemon)
      end
      return if shell.exitstatus == 0
      raise Error.new("start-stop-daemon exited #{shell.exitstatus}: #{redact(shell.stderr.strip)}\n  command: #{Convergent.command_line(daemon)}",
                      exit_code: shell.exitstatus, command: daemon, stderr: redact(shell.stderr.strip))
    end

    # The binary's version line, e.g. "convergent 0.1.0".
    def version
      run(['--version']).stdout.strip
    end

    # The argument vector for a command (for logs and tests: holds no secret).
    def command_for(args)
      [binary, *global_args, *args]
    end

    # Shows the settings, never the credentials.
    def inspect
      "#<#{self.class} binary=#{binary.inspect} store=#{store.inspect} credentials=#{@credentials.keys.inspect}>"
    end
    alias_method :to_s, :inspect

    private

    def global_args
      args = []
      # Like the binary's own default: a config file is read when present.
      args << "--config=#{@config_file}" if @config_file && ::File.exist?(@config_file)
      {
        'store' => @store, 'prefix' => @prefix, 'cache-dir' => @cache_dir, 'max-stale' => @max_stale,
        'on-unreachable' => @on_unreachable, 'timeout' => @timeout
      }.each { |flag, value| args << "--#{flag}=#{value}" unless value.nil? || value.to_s.empty? }
      args
    end

    # Runs the binary; returns the finished Mixlib::ShellOut or raises.
    # `timeout` overrides command_timeout (the orchestrator runs longer).
    def run(args, timeout: nil, live_stdout: nil)
      argv = command_for(args)
      limit = timeout || command_timeout
      shell = Mixlib::ShellOut.new(*argv, timeout: limit, live_stdout: live_stdout,
                                          environment: @environment.merge(@credentials))
      words = args.grep_v(/\A--/)
      what = "convergent #{(words.empty? ? args : words).first(2).join(' ')}"
      begin
        shell.run_command
      rescue Mixlib::ShellOut::CommandTimeout
        raise TimeoutError.new(
          "#{what} did not finish within #{limit}s and was stopped\n  command: #{Convergent.command_line(argv)}",
          command: argv, stderr: redact(shell.stderr.to_s)
        )
      rescue SystemCallError => e
        raise Error.new("cannot run #{binary}: #{redact(e.message)}", command: argv)
      end
      return shell if shell.exitstatus == 0

      stderr = redact(shell.stderr.to_s.strip)
      how = if shell.exitstatus
              "exited #{shell.exitstatus}#{EXIT_CODES[shell.exitstatus] && " (#{EXIT_CODES[shell.exitstatus]})"}"
            else
              "was killed by signal #{shell.status.termsig}"
            end
      raise Error.new("#{what} #{how}: #{stderr.empty? ? '(nothing on stderr)' : stderr}\n  command: #{Convergent.command_line(argv)}",
                      exit_code: shell.exitstatus, command: argv, stderr: stderr)
    end


    # Whether stderr (the binary's JSON error, with --format=json) says
    # nothing is stored at KEY.
    def missing_key?(stderr, key)
      error = JSON.parse(stderr.to_s.lines.last.to_s)
      error.is_a?(Hash) && error['key'].to_s.end_with?("/#{key}") && error['message'].to_s.end_with?('nothing is stored at this key')
    rescue JSON::ParserError
      false
    end

    def warn_stale(result, stderr)
      source = result['source']
      @logger.warn(
        "convergent: the desired state of #{result['cluster']}/#{result['node']} " \
        "(generation #{result['generation']}, state #{result['state'].inspect}) comes from the cache, " \
        "not the store: fetched #{Convergent.format_age(source['cache_age_s'])} ago, at #{source['fetched_at']}. " \
        "#{redact(stderr.to_s.strip)}"
      )
    end

    # Removes secret values (and the password of a user:password) from text.
    def redact(text)
      secrets = @credentials.values.flat_map { |v| [v, v.split(':', 2)[1]] }.compact.reject { |s| s.length < 3 }
      secrets.sort_by { |s| -s.length }.reduce(text) { |t, secret| t.gsub(secret, '[redacted]') }
    end

    def stringify(hash)
      hash.to_h.each_with_object({}) { |(k, v), out| out[k.to_s] = v.to_s }
    end

  end

  # An age in seconds the way the binary prints it: 42s, 5m07s, 3h02m, 2d04h.
  def self.format_age(seconds)
    s = seconds.to_i
    if s < 60 then "#{s}s"
    elsif s < 3600 then format('%dm%02ds', s / 60, s % 60)
    elsif s < 86_400 then format('%dh%02dm', s / 3600, (s % 3600) / 60)
    else format('%dd%02dh', s / 86_400, (s % 86_400) / 3600)
    end
  end
end
