# frozen_string_literal: true

#
# Cookbook:: convergent
# Resource:: convergent_report
#
# One check-in, `convergent report`, from a resource: for runs that want to
# report at a point of their own choosing. The normal check-in is the event
# handler of recipes/report.rb, which reports once the whole run has ended.
# Like `execute`, it acts in every run.

provides :convergent_report
unified_mode true

use '_partial/_connection'

property :attributes_file, String, name_property: true,
         description: 'The attributes file the run used'
property :status, String, equal_to: %w(success failure), default: 'success', desired_state: false
property :message, [String, nil], desired_state: false,
         description: 'A short message, e.g. the exception class of a failed run'
property :duration, [Integer, Float, nil], desired_state: false,
         description: 'Seconds the run took'
property :fail_on_error, [true, false], default: false, desired_state: false,
         description: 'Fail the run when the report cannot be made (default: log a warning)'

default_action :report

action :report do
  converge_by "report #{new_resource.status} from #{new_resource.attributes_file}" do
    begin
      out = convergent_resource_client.report(
        status: new_resource.status,
        attributes_file: new_resource.attributes_file,
        message: new_resource.message,
        duration: new_resource.duration
      )
      Chef::Log.info("convergent: reported #{new_resource.status}: #{out}")
    rescue Convergent::Error => e
      raise if new_resource.fail_on_error
      Chef::Log.warn("convergent: could not report #{new_resource.status}: #{e.message}")
    end
  end
end

action_class do
  def convergent_resource_client
    Convergent::Client.for_resource(new_resource, config_file: node['convergent']['config_file'], logger: Chef::Log)
  end
end
