# failed-run: a run failed at converge time after reading the view; the
# report handler checked in `failure` with the exception's class at the
# generation it read. The two runs after it succeeded and checked in.

convergent = '/usr/local/bin/convergent'
attributes = json('/var/lib/convergent/web.json')

control 'failed-run-check-in' do
  describe file('/var/lib/convergent-test/run-0.log') do
    its('content') { should match(/ConvergentTest::IntendedFailure/) }
  end
  describe json('/var/lib/convergent-test/failed-check-in.json') do
    its('status') { should eq 'failure' }
    its('message') { should eq 'ConvergentTest::IntendedFailure' }
    its('generation') { should eq attributes.params.dig('convergent', 'generation') }
  end
end

control 'failed-run-later-success' do
  describe json(command: "#{convergent} --format json get observed/web/web-01") do
    its('status') { should eq 'success' }
    its('generation') { should eq attributes.params.dig('convergent', 'generation') }
  end
end
