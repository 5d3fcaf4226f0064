# frozen_string_literal: true

require_relative 'test_helper'
require_relative 'support/fake_node'
require_relative 'support/settings'

# The check-in at the end of a run, against the real binary.
class ReportHandlerTest < Minitest::Test
  include ConvergentTest::Sandbox
  include ConvergentTest::Settings

  def setup
    super
    view
    @node = FakeNode.new('web-01', 'convergent' => settings(cluster: 'web'))
  end

  def observed
    YAML.safe_load(File.read(path('view.yml'))).dig('convergent', 'observed', 'web', 'web-01')
  end

  def report_run(status, **options)
    Convergent::ReportHandler.report_run(@node, status: status, logger: @log, env: {}, **options)
  end

  def test_a_successful_run_reports_each_file_it_used_with_its_duration
    result = FakeRecipe.new(@node).convergent_result('web')
    outcomes = report_run(:success, duration: 41.27)
    assert_equal [path('lib/web.json')], outcomes.map(&:first)
    assert_equal 'success', observed['status']
    assert_equal result['generation'], observed['generation']
    assert_in_delta 41.3, observed['duration_s'], 0.01
    assert_match(%r{reported success: convergent/observed/web/web-01: success}, @log.of(:info).join)
  end

  def test_declared_health_checks_are_written_and_reported_with_the_run
    FakeRecipe.new(@node).convergent_result('web')
    run_state = Convergent::RunState.new(@node.run_state)
    run_state.declare_check('web', 'app-port', 'tcp' => '127.0.0.1:1', 'timeout' => '1s')
    run_state.declare_check('web', 'app-ready', 'command' => ['true'], 'timeout' => '5s')
    report_run(:success)
    checks = observed.dig('health', 'checks')
    assert_equal %w(app-port app-ready), checks.map { |c| c['name'] }
    assert_equal [false, true], checks.map { |c| c['passed'] }
    assert_equal false, observed.dig('health', 'healthy')
    file = path('lib/web.checks.json')
    assert_equal '100640', format('%o', File.stat(file).mode)
    # A later run that declares none: the file goes, and the check-in has no recipe checks.
    @node.run_state.delete('convergent_health_checks')
    report_run(:success)
    refute File.exist?(file)
    assert_equal [], observed.dig('health', 'checks')
  end

  def test_a_failed_run_reports_the_exception_class_only
    FakeRecipe.new(@node).convergent_result('web')
    exception = RuntimeError.new('password=Hunter2 was rejected')
    report_run(:failure, exception: exception, duration: 3)
    assert_equal 'failure', observed['status']
    assert_equal 'RuntimeError', observed['message']
    refute_includes File.read(path('view.yml')), 'Hunter2'
  end

  def test_a_report_that_cannot_be_made_is_logged_and_never_raised
    FakeRecipe.new(@node).convergent_result('web')
    File.delete(path('view.yml'))
    outcomes = report_run(:success, duration: 1)
    assert_kind_of Convergent::Error, outcomes.first.last
    assert_match(/could not report success for cluster web from .*web\.json: convergent report exited 69/,
                 @log.of(:warn).join)
  end

  def test_a_why_run_writes_no_check_in_and_says_so
    FakeRecipe.new(@node).convergent_result('web')
    %i(success failure).each do |status|
      assert_equal [], report_run(status, why_run: true, exception: RuntimeError.new('x'))
    end
    assert_nil observed
    assert_match(/why-run: no check-in written \(the run's success applied nothing\)/, @log.of(:warn).join)
  end

  def test_a_run_that_read_nothing_has_nothing_to_report
    assert_equal [], report_run(:success)
    assert_includes @log.of(:info).join, 'nothing to report'
    assert_nil observed
  end

  def test_a_run_that_failed_before_reading_reports_from_the_earlier_file_of_its_cluster
    # An earlier run wrote the file; this one failed before reading.
    FakeRecipe.new(FakeNode.new('web-01', 'convergent' => settings)).convergent_result('web')
    report_run(:failure, exception: ArgumentError.new('boom'))
    assert_equal 'failure', observed['status']
    assert_equal 'ArgumentError', observed['message']
  end

  def test_the_file_convergent_watch_started_the_run_with_is_reported
    watch_file = path('watch/attributes.json')
    client.attributes(cluster: 'web', node: 'web-01', output: watch_file)
    Convergent::ReportHandler.report_run(@node, status: :success, logger: @log,
                                                env: { 'CONVERGENT_ATTRIBUTES' => watch_file })
    assert_equal 'success', observed['status']
  end

  def test_bad_settings_are_logged_not_raised
    @node = FakeNode.new('web-01', 'convergent' => settings(command_timeout: -1))
    FakeRecipe.new(FakeNode.new('web-01', 'convergent' => settings)).convergent_result('web')
    @node.run_state.replace('convergent_attributes_files' => { 'web' => path('lib/web.json') })
    assert_equal [], report_run(:success)
    assert_match(/the run's success was not reported: ArgumentError: command_timeout/, @log.of(:warn).join)
  end
end
