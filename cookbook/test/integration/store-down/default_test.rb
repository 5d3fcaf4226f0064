# store-down: the store is gone and the cache holds the node's last read
# (cluster web "converged" at 2.4.1). The run converged to the cached state
# and said so; its check-in could not be written and did not fail the run.

attributes = json('/var/lib/convergent/web.json')

control 'store-down-store-is-gone' do
  describe file('/var/lib/convergent-test/view.yml') do
    it { should_not exist }
  end
end

control 'store-down-cached-state' do
  describe attributes do
    its(%w(convergent state)) { should eq 'converged' }
    its(%w(convergent source stale)) { should eq true }
  end
  describe file('/var/lib/convergent-web/desired-source') do
    its('content') { should eq "cache\n" }
  end
end

control 'store-down-service' do
  describe command('/etc/init.d/convergent-web status') do
    its('exit_status') { should eq 0 }
  end
  describe file('/var/lib/convergent-web/running') do
    its('content') { should match(/^version 2\.4\.1$/) }
  end
end
