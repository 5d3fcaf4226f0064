# web-waiting: cluster web wants "waiting" at 2.4.1. The version is
# installed and configured, the service stopped and disabled.

attributes = json('/var/lib/convergent/web.json')

control 'web-waiting-service' do
  describe command('/etc/init.d/convergent-web status') do
    its('exit_status') { should eq 3 }
  end
  describe command('ls /etc/rc2.d') do
    its('stdout') { should_not match(/^S\d\dconvergent-web$/) }
  end
  describe file('/var/lib/convergent-web/running') do
    it { should_not exist }
  end
end

control 'web-waiting-installed' do
  describe file('/opt/convergent-web/current') do
    it { should be_symlink }
    its('link_path') { should eq '/opt/convergent-web/releases/2.4.1' }
  end
  describe file('/opt/convergent-web/releases/2.4.1/convergent-web') do
    it { should be_executable }
    its('content') { should match(/^  echo 'version 2\.4\.1'$/) }
  end
  describe file('/etc/convergent-web/app.conf') do
    its('content') { should match(/^version = 2\.4\.1$/) }
    its('content') { should match(/^port = 8080$/) }
    its('content') { should match(/^workers = 4$/) }
  end
end

control 'web-waiting-desired-state' do
  describe attributes do
    its(%w(convergent state)) { should eq 'waiting' }
    its(%w(convergent source stale)) { should eq false }
  end
end
