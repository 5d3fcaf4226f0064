# web-off: cluster web wants "off". The service is stopped and disabled, and
# on this fresh node nothing of the app was installed.

attributes = json('/var/lib/convergent/web.json')

control 'web-off-service' do
  describe command('/etc/init.d/convergent-web status') do
    its('exit_status') { should eq 3 }
  end
  describe command('ls /etc/rc2.d') do
    its('stdout') { should_not match(/^S\d\dconvergent-web$/) }
  end
  describe file('/var/lib/convergent-web/running') do
    it { should_not exist }
  end
  describe file('/opt/convergent-web/current') do
    it { should_not exist }
  end
end

control 'web-off-desired-state' do
  describe attributes do
    its(%w(convergent state)) { should eq 'off' }
    its(%w(convergent source stale)) { should eq false }
  end
  describe file('/var/lib/convergent-web/desired-source') do
    its('content') { should eq "store\n" }
  end
end
