# credentials: convergent::default wrote the config file and the token file
# (0600, root) once; the second converge changed nothing (scripts/kitchen
# checks that). The token is in no node attribute and no config field. With
# the real Consul agent (ACLs on, default deny) the second run read web
# through the token file and checked in; without the token the store refuses.

convergent = '/usr/local/bin/convergent'
consul = file('/tmp/kitchen/data/bin/consul').exist?

control 'credentials-config-file' do
  describe file('/etc/convergent/config.yml') do
    its('content') { should match(%r{^store: "consul://127\.0\.0\.1:\d+"$}) }
    its('content') { should match(/^cluster: "web"$/) }
    its('content') { should_not match(/kitchen-test-token/) }
    its('mode') { should cmp '0644' }
  end
  describe file('/etc/convergent/store.token') do
    its('content') { should eq 'kitchen-test-token' }
    its('mode') { should cmp '0600' }
    its('owner') { should eq 'root' }
  end
  describe command('cat /tmp/kitchen/nodes/*.json') do
    its('stdout') { should_not match(/kitchen-test-token/) }
  end
end

control 'credentials-one-owner' do
  describe file('/var/lib/convergent-test/run-0.log') do
    its('content') { should match(%r{/etc/convergent/config\.yml is declared 2 times .*one convergent_config owns a file}) }
  end
end

if consul
  control 'credentials-check-in' do
    attributes = json('/var/lib/convergent/web.json')
    describe json(command: "CONSUL_HTTP_TOKEN_FILE=/etc/convergent/store.token #{convergent} --format json get observed/web/web-01") do
      its('status') { should eq 'success' }
      its('generation') { should eq attributes.params.dig('convergent', 'generation') }
    end
    describe command("#{convergent} get observed/web/web-01") do
      its('exit_status') { should eq 77 }
    end
  end
else
  control 'credentials-no-check-in' do
    describe file('/var/lib/convergent/web.json') do
      it { should_not exist }
    end
  end
end
