#
# Cookbook:: convergent_test
# Recipe:: fail_on_flag
#
# Fails the run at converge time, after the desired state was read, while
# /var/lib/convergent-test/fail-this-run exists (test/fixtures/chef-runs
# puts it there for one run of the failed-run suite).

ruby_block 'convergent_test: fail this run on purpose' do
  block do
    raise ConvergentTest::IntendedFailure, 'the failed-run suite fails this run on purpose'
  end
  only_if { ::File.exist?('/var/lib/convergent-test/fail-this-run') }
end
