# web-converged: cluster web wants "converged" at 2.4.1. The version is
# installed and configured, the service enabled and running it. (Also the
# end state of the web-converge-time suite.)

attributes = json('/var/lib/convergent/web.json')

control 'web-converged-service' do
  describe command('/etc/init.d/convergent-web status') do
    its('exit_status') { should eq 0 }
  end
  describe command('ls /etc/rc2.d') do
    its('stdout') { should match(/^S\d\dconvergent-web$/) }
  end
  describe file('/var/lib/convergent-web/running') do
    its('content') { should match(/^version 2\.4\.1$/) }
    its('content') { should match(/^workers = 4$/) }
  end
end

control 'web-converged-installed' do
  describe file('/opt/convergent-web/current') do
    its('link_path') { should eq '/opt/convergent-web/releases/2.4.1' }
  end
  describe file('/etc/convergent-web/app.conf') do
    its('content') { should match(/^version = 2\.4\.1$/) }
  end
  describe file('/var/lib/convergent-web/desired-source') do
    its('content') { should eq "store\n" }
  end
end

control 'web-converged-desired-state' do
  describe attributes do
    its(%w(convergent state)) { should eq 'converged' }
    its(%w(convergent source stale)) { should eq false }
  end
end
