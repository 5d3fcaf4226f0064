# frozen_string_literal: true

#
# Cookbook:: convergent
# Resource:: convergent_rollout
#
# Runs a plan from a chef run on an orchestration node: `convergent rollout
# run PLAN`, which starts the plan or resumes it where its records in the
# store say it stopped (the orchestrator keeps nothing in memory that is not
# in the store). A plan already completed runs nothing. The resource is
# updated only when the plan moved: a step or a batch further than before.
#
#   convergent_rollout 'web-2.5.0' do
#     plan 'steps' => [{ 'cluster' => 'web', 'set' => { 'version' => '2.5.0' },
#                        'strategy' => { 'canary' => 1, 'batch' => '25%' } }]
#     wait_timeout 3600
#   end

require 'tempfile'

provides :convergent_rollout
unified_mode true

use '_partial/_connection'

property :plan_name, String, name_property: true, regex: Convergent::Rollout::NAME,
         description: "The plan's name (its `name`): the key of its record in the store"
property :plan, [Hash, String], required: true, desired_state: false,
         description: 'The plan as a Hash (written to plan_file), or the absolute path of a plan file'
property :plan_file, String, desired_state: false,
         default: lazy { ::File.join(node['convergent']['attributes_dir'], 'plans', "#{plan_name}.yml") },
         description: 'Where a Hash plan is written'
property :wait, [true, false], default: true, desired_state: false,
         description: 'true: run the plan to its end here; false: start it in the background and return'
property :wait_timeout, [Integer, Float], default: 3600, desired_state: false,
         callbacks: { 'must be a positive number of seconds' => ->(t) { t.positive? } },
         description: 'With wait: seconds before the orchestrator is stopped and the run fails (the next run resumes)'
property :start_wait, [Integer, Float], default: 5, desired_state: false,
         callbacks: { 'must be a positive number of seconds' => ->(t) { t.positive? } },
         description: 'Without wait: seconds to wait for the background orchestrator to move the plan'
property :poll, [String, nil], default: nil, desired_state: false, regex: Convergent::ConfigFile::DURATION,
         description: 'How often the orchestrator reads the fleet while waiting (binary default 2s)'
property :member_ttl, [String, nil], default: nil, desired_state: false, regex: Convergent::ConfigFile::DURATION,
         description: 'A node silent for longer is absent (binary default 1h)'
property :lock_wait, [String, nil], default: nil, desired_state: false, regex: Convergent::ConfigFile::DURATION,
         description: "Wait this long for the plan's lock held by another orchestrator (binary default 0s)"
property :pid_file, String, desired_state: false, default: lazy { "/run/convergent-rollout-#{plan_name}.pid" },
         description: 'Without wait: the background orchestrator pid'
property :log_file, String, desired_state: false, default: lazy { "/var/log/convergent/rollout-#{plan_name}.log" },
         description: "Without wait: the background orchestrator's output"

default_action :run

action :run do
  run_plan
end

action_class do
  # The plan run or resumed, or nothing (completed, or its background
  # orchestrator still at it); updated only when the plan moved.
  def run_plan
    name = new_resource.plan_name
    text = Convergent::Rollout.plan_text(name, new_resource.plan)
    before = Convergent::Rollout.progress(rollout_client, name)
    if before.completed?
      Chef::Log.debug("convergent_rollout #{name}: the plan is completed; nothing to run")
      return
    end
    if before.rolled_back?
      raise Convergent::Error, "convergent_rollout #{name}: plan #{name} was rolled back and does not go on; " \
                               'write a new plan under a new name'
    end
    if !new_resource.wait && (pid = Convergent::Rollout.running_pid(new_resource.pid_file))
      Chef::Log.info("convergent_rollout #{name}: its orchestrator (pid #{pid}) is running it: #{before}")
      return
    end

    if Chef::Config[:why_run]
      dry_run(name, text, before)
      return
    end

    file = text ? new_resource.plan_file : new_resource.plan
    Convergent::Rollout.write_plan(file, text) if text
    new_resource.wait ? run_to_the_end(name, file, before) : start_in_background(name, file, before)
    after = Convergent::Rollout.progress(rollout_client, name)
    return if after == before

    # The plan moved: that is this resource's change.
    converge_by("move plan #{name}: #{before} -> #{after}") {}
  end

  def rollout_client
    @rollout_client ||= Convergent::Client.for_resource(new_resource, config_file: node['convergent']['config_file'],
                                                                      logger: Chef::Log)
  end

  def run_options
    { poll: new_resource.poll, member_ttl: new_resource.member_ttl, lock_wait: new_resource.lock_wait }
  end

  # why-run: the dry run of the plan (who goes when), and nothing written.
  def dry_run(name, text, before)
    output = if text
               Tempfile.create(["convergent-plan-#{name}", '.yml']) do |f|
                 f.write(text)
                 f.flush
                 rollout_client.rollout_run(f.path, dry_run: true, options: run_options)
               end
             else
               rollout_client.rollout_run(new_resource.plan, dry_run: true, options: run_options)
             end
    how = new_resource.wait ? 'run' : 'start in the background'
    # The nested Array prints as it is (Chef prefixes each String with "Would").
    converge_by(["#{how} plan #{name} (#{before}); its dry run:", output.lines.map { |l| "  #{l.rstrip}" }]) {}
  end

  # wait true: the orchestrator in the foreground until the plan completes
  # (exit 0) or stops (non-zero: paused, failed, lock held, bad plan).
  def run_to_the_end(name, file, before)
    Chef::Log.info("convergent_rollout #{name}: running the plan (#{before})")
    rollout_client.rollout_run(file, options: run_options, timeout: new_resource.wait_timeout,
                                     live_stdout: Convergent::Rollout::LogLines.new(Chef::Log, "convergent_rollout #{name}: "))
  rescue Convergent::TimeoutError => e
    raise Convergent::TimeoutError.new(
      "convergent_rollout #{name}: the plan did not complete within wait_timeout #{new_resource.wait_timeout}s; " \
      "its orchestrator was stopped and the next run resumes it where it stands (#{progress_or_unknown(name)})\n#{e.message}",
      command: e.command, stderr: e.stderr
    )
  end

  # wait false: the orchestrator in the background (start-stop-daemon),
  # then up to start_wait seconds for its first move or its end.
  def start_in_background(name, file, before)
    client = rollout_client
    # No orchestrator runs (checked above): a pid file left behind names a
    # process that is gone, or another one that got its pid.
    ::File.delete(new_resource.pid_file) if ::File.exist?(new_resource.pid_file)
    client.start_detached(client.rollout_run_args(file, options: run_options),
                          pid_file: new_resource.pid_file, log_file: new_resource.log_file)
    deadline = Process.clock_gettime(Process::CLOCK_MONOTONIC) + new_resource.start_wait
    loop do
      alive = Convergent::Rollout.running_pid(new_resource.pid_file)
      now = Convergent::Rollout.progress(client, name)
      return if now.completed?
      # start-stop-daemon may return before its child has written the pid file.
      if !alive && ::File.exist?(new_resource.pid_file)
        raise Convergent::Error, "convergent_rollout #{name}: its orchestrator stopped before the plan completed " \
                                 "(#{now}); its log, #{new_resource.log_file}, ends with:\n" \
                                 "#{Convergent::Rollout.log_tail(new_resource.log_file)}"
      end
      return if now != before
      if Process.clock_gettime(Process::CLOCK_MONOTONIC) >= deadline
        unless alive
          raise Convergent::Error, "convergent_rollout #{name}: its orchestrator did not start within start_wait " \
                                   "#{new_resource.start_wait}s (no pid file #{new_resource.pid_file}); its log, " \
                                   "#{new_resource.log_file}, ends with:\n#{Convergent::Rollout.log_tail(new_resource.log_file)}"
        end
        Chef::Log.info("convergent_rollout #{name}: its orchestrator runs in the background; " \
                       "the plan has not moved yet (#{now}); log #{new_resource.log_file}")
        return
      end
      sleep 0.2
    end
  end

  def progress_or_unknown(name)
    Convergent::Rollout.progress(rollout_client, name).to_s
  rescue Convergent::Error
    'its progress could not be read'
  end
end
