# Every suite whose store is up: the run's check-in is in the store, a
# success at the generation of the attributes file the run used.

attributes = json('/var/lib/convergent/web.json')

control 'check-in' do
  node_name = attributes.params.dig('convergent', 'node')
  describe json(command: "/usr/local/bin/convergent --format json get observed/web/#{node_name}") do
    its('status') { should eq 'success' }
    its('state') { should eq attributes.params.dig('convergent', 'state') }
    its('generation') { should eq attributes.params.dig('convergent', 'generation') }
    its('stale') { should eq false }
  end
end
