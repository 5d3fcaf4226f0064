# credentials: convergent::default wrote the config file and the token file
# (0600, root) once; the second converge changed nothing (scripts/kitchen
# checks that). The token is in no node attribute and no config field.

control 'credentials-config-file' do
  describe file('/etc/convergent/config.yml') do
    its('content') { should match(%r{^store: "consul://127\.0\.0\.1:8500"$}) }
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

control 'credentials-no-check-in' do
  describe file('/var/lib/convergent/web.json') do
    it { should_not exist }
  end
end
