# The recipe's health check fails: the run succeeded, so the node checks in
# converged, but unhealthy, and `status` shows which check fails.

attributes = json('/var/lib/convergent/web.json')
node_name = attributes.params.dig('convergent', 'node')

control 'converged-but-unhealthy' do
  describe json(command: "/usr/local/bin/convergent --format json get observed/web/#{node_name}") do
    its('status') { should eq 'success' }
    its('generation') { should eq attributes.params.dig('convergent', 'generation') }
    its(%w(health healthy)) { should eq false }
    its(%w(health checks)) { should include(include('name' => 'app-port', 'source' => 'recipe', 'passed' => false)) }
    its(%w(health checks)) { should include(include('name' => 'app-config', 'source' => 'recipe', 'passed' => true)) }
  end

  describe file('/var/lib/convergent/web.checks.json') do
    it { should exist }
    its('mode') { should cmp '0640' }
  end

  describe command('/usr/local/bin/convergent status --cluster web') do
    its('stdout') { should match(/^#{node_name}\s+converged\s+\h{16}\s+\h{16}\s+converged\s+converged \S+\s+UNHEALTHY: app-port\s/) }
    its('stdout') { should match(/^health: 0 healthy, 1 unhealthy, 0 unknown$/) }
  end

  describe command('/usr/local/bin/convergent status --cluster web --check') do
    its('exit_status') { should eq 1 }
    its('stderr') { should match(/1 of 1 present members are unhealthy/) }
  end

  # Between runs, `convergent health` re-runs the checks (the recipe's file,
  # the view's from the attributes file) and re-reports.
  describe command("/usr/local/bin/convergent health --cluster web --node #{node_name} " \
                   '--attributes /var/lib/convergent/web.json --checks /var/lib/convergent/web.checks.json') do
    its('exit_status') { should eq 0 }
    its('stdout') { should match(/UNHEALTHY: app-port \(cannot connect to 127\.0\.0\.1:1/) }
  end
end
