# frozen_string_literal: true

#
# Cookbook:: convergent
# Library:: rollout
#
# What `convergent_rollout` needs besides running the binary: the plan it
# runs (a file, or a Hash written to one), where that plan stands in the
# store (so that a resource is updated only when the plan moved), and the
# orchestrator it may have left running in the background.
#
# Plain Ruby: used by Chef recipes and by the minitest suite alike.

require 'fileutils'
require 'json'
require 'yaml'
require_relative 'client'
require_relative 'error'

module Convergent
  # A plan run from Chef.
  module Rollout
    # A plan's name: the binary's rule for names (letters, digits, `.`, `-`,
    # `_`, starting with a letter or digit); it is also a file name here.
    NAME = /\A[A-Za-z0-9][A-Za-z0-9._-]{0,127}\z/.freeze

    module_function

    # The plan as the binary reads it, from what a recipe gave: a Hash (its
    # `name` defaults to `name`, and must be `name` when given) or the path
    # of a plan file (whose `name` must be `name`).
    #
    # @return [String, nil] the text to write for a Hash; nil for a file,
    #   which is run as it is
    # @raise [Convergent::Error] naming the plan and what is wrong
    def plan_text(name, plan)
      raise Error, "convergent_rollout #{name.inspect}: not a plan name (letters, digits, ., -, _)" unless name.match?(NAME)
      case plan
      when Hash
        document = plain(plan)
        document['name'] ||= name
        check_name!(name, document['name'], 'the plan Hash')
        # JSON is YAML (1.2, the binary's): no Ruby-YAML quirk ("off" as a
        # boolean, say) can change what the plan means.
        "# Written by Chef (convergent_rollout #{name.inspect}): changes made here are overwritten.\n" \
          "#{JSON.pretty_generate(document)}\n"
      when String
        raise Error, "convergent_rollout #{name.inspect}: plan #{plan.inspect} is not an absolute path" unless plan.start_with?('/')
        begin
          document = YAML.safe_load(::File.read(plan))
        rescue SystemCallError, Psych::Exception => e
          raise Error, "convergent_rollout #{name.inspect}: cannot read plan file #{plan}: #{e.message}"
        end
        raise Error, "convergent_rollout #{name.inspect}: plan file #{plan} is not a map" unless document.is_a?(Hash)
        check_name!(name, document['name'], "plan file #{plan}")
        nil
      else
        raise Error, "convergent_rollout #{name.inspect}: plan must be a Hash or the path of a plan file, not #{plan.class}"
      end
    end

    # Writes `text` to `path` unless it already holds it: 0640, replaced
    # atomically (a half-written plan is never run).
    # @return [Boolean] whether the file changed
    def write_plan(path, text)
      return false if ::File.file?(path) && ::File.read(path) == text
      FileUtils.mkdir_p(::File.dirname(path), mode: 0o750)
      temp = "#{path}.#{Process.pid}.tmp"
      ::File.open(temp, ::File::WRONLY | ::File::CREAT | ::File::TRUNC, 0o640) { |f| f.write(text) }
      ::File.rename(temp, path)
      true
    ensure
      ::File.delete(temp) if temp && ::File.exist?(temp)
    end

    # Where plan `name` stands: its record and its active rollouts.
    def progress(client, name)
      record = client.plan_record(name)
      mine = client.rollouts.select { |r| r.is_a?(Hash) && r.dig('record', 'plan') == name }
      Progress.new(record, mine)
    end

    # The pid of the background orchestrator in `pid_file` when it is still
    # running (not a zombie) and is a `rollout run`; else nil.
    def running_pid(pid_file)
      pid = Integer(::File.read(pid_file).strip, 10)
      cmdline = ::File.read("/proc/#{pid}/cmdline").split("\0")
      state = ::File.read("/proc/#{pid}/status")[/^State:\s*(\S)/, 1]
      return nil if state == 'Z' || cmdline.each_cons(2).none? { |a, b| a == 'rollout' && b == 'run' }
      pid
    rescue SystemCallError, ArgumentError, TypeError
      nil
    end

    # The last `lines` lines of a log, for an error message.
    def log_tail(path, lines = 15)
      ::File.readlines(path).last(lines).join.strip
    rescue SystemCallError
      ''
    end

    def check_name!(name, given, where)
      return if given == name
      raise Error, "convergent_rollout #{name.inspect}: #{where} is plan #{given.inspect}; " \
                   'the resource must be named after the plan it runs'
    end

    # Node attributes (Chef's Mash) as plain Hashes, Arrays and scalars.
    def plain(value)
      case value
      when Hash then value.each_with_object({}) { |(k, v), out| out[k.to_s] = plain(v) }
      when Array then value.map { |v| plain(v) }
      when Symbol then value.to_s
      else value
      end
    end

    # Where a plan stands, in what can move: its record's status and steps
    # done, and each active rollout's step, direction, status, batches and
    # threshold. Two readings differ exactly when the plan moved.
    class Progress
      attr_reader :record, :rollouts

      def initialize(record, rollouts)
        @record = record
        @rollouts = rollouts
      end

      # nil (never started), "running", "completed" or "rolled_back".
      def status
        record && record['status']
      end

      def started?
        !record.nil?
      end

      def completed?
        status == 'completed'
      end

      def rolled_back?
        status == 'rolled_back'
      end

      # What is compared between two readings.
      def key
        [status, record && record['done'],
         rollouts.map do |r|
           rec = r['record'] || {}
           [r['cluster'], rec['id'], rec['status'], rec['direction'], rec['batches'], rec['threshold']]
         end.sort_by(&:to_s)]
      end

      def ==(other)
        other.is_a?(Progress) && key == other.key
      end
      alias_method :eql?, :==

      def hash
        key.hash
      end

      # e.g. "running, 1/2 steps done; web: rollout web-2.5.0.2 running, 2 batches released (threshold 0.51)"
      def to_s
        return 'not started' unless started?
        text = "#{status}, #{record['done']}/#{record['steps']} steps done"
        rollouts.each do |r|
          rec = r['record'] || {}
          direction = rec['direction'] == 'forward' || rec['direction'].nil? ? '' : " (#{rec['direction']})"
          text += "; #{r['cluster']}: rollout #{rec['id']} #{rec['status']}#{direction}, " \
                  "#{rec['batches']} batches released (threshold #{format('%.2f', rec['threshold'].to_f)})"
        end
        text
      end
    end

    # Mixlib::ShellOut's live_stdout: each line the orchestrator prints, to
    # a logger as it comes.
    class LogLines
      def initialize(logger, prefix)
        @logger = logger
        @prefix = prefix
        @partial = +''
      end

      def <<(chunk)
        @partial << chunk.to_s
        while (line = @partial.slice!(/\A[^\n]*\n/))
          @logger.info("#{@prefix}#{line.chomp}")
        end
        self
      end
    end
  end
end
