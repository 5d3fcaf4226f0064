#
# Cookbook:: convergent
# Recipe:: report
#
# Registers the check-in: when the run ends, `convergent report` for each
# attributes file the run used (README "Check-ins"):
#
#   success: convergent report --status success --attributes FILE --duration SECONDS
#   failure: convergent report --status failure --attributes FILE --message EXCEPTION_CLASS
#
# Put it first in the run list: a run that fails before this recipe is
# compiled is not reported. A report that cannot be made is logged as a
# warning; it never fails a run nor hides why a run failed.

Chef.event_handler do
  on :run_completed do |completed_node, run_status|
    Convergent::ReportHandler.report_run(
      completed_node,
      status: :success,
      duration: run_status.elapsed_time,
      logger: Chef::Log
    )
  end

  on :run_failed do |exception, run_status|
    if run_status.node
      Convergent::ReportHandler.report_run(
        run_status.node,
        status: :failure,
        exception: exception,
        duration: run_status.elapsed_time,
        logger: Chef::Log
      )
    end
  end
end
