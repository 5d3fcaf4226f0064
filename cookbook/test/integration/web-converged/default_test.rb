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

control 'web-converged-check-in' do
  describe attributes do
    its(%w(convergent state)) { should eq 'converged' }
  end
  node_name = attributes.params.dig('convergent', 'node')
  describe json(command: "/usr/local/bin/convergent --format json get observed/web/#{node_name}") do
    its('status') { should eq 'success' }
    its('generation') { should eq attributes.params.dig('convergent', 'generation') }
  end
end
