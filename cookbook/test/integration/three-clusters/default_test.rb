# three-clusters: node['convergent']['cluster'] is web, and the recipe also
# reads queue and search. Each cluster the run read has its check-in: a
# success at the generation of its own attributes file.

convergent = '/usr/local/bin/convergent'

{ 'web' => '2.4.1', 'queue' => '7.1.0', 'search' => '1.2.3' }.each do |cluster, version|
  attributes = json("/var/lib/convergent/#{cluster}.json")

  control "three-clusters-#{cluster}-check-in" do
    describe attributes do
      its(%w(convergent cluster)) { should eq cluster }
    end
    describe json(command: "#{convergent} --format json get observed/#{cluster}/web-01") do
      its('status') { should eq 'success' }
      its('generation') { should eq attributes.params.dig('convergent', 'generation') }
    end
    describe file("/var/lib/convergent-test/#{cluster}.version") do
      its('content') { should eq "#{version}\n" }
    end
  end
end

control 'three-clusters-status' do
  %w(web queue search).each do |cluster|
    describe command("#{convergent} status --cluster #{cluster} --check") do
      its('exit_status') { should eq 0 }
      its('stdout') { should match(/1 converged/) }
    end
  end
end
