# install-deb: the Debian package installed with dpkg, /usr/local/bin linked
# to its binary, and what it ships.

control 'install-deb-package' do
  describe package('convergent') do
    it { should be_installed }
    its('version') { should eq '0.1.0' }
  end
  describe file('/usr/local/bin/convergent') do
    it { should be_symlink }
    its('link_path') { should eq '/usr/bin/convergent' }
  end
  describe file('/etc/convergent/config.yml') do
    it { should be_file }
  end
  describe command("dpkg-query -W -f '${Conffiles}' convergent") do
    its('stdout') { should match(%r{^ /etc/convergent/config\.yml \h{32}$}) }
  end
  describe file('/var/cache/convergent') do
    it { should be_directory }
    its('mode') { should cmp '0700' }
    its('owner') { should eq 'root' }
  end
  %w(/lib/systemd/system/convergent-watch@.service /usr/share/man/man1/convergent.1.gz
     /usr/share/bash-completion/completions/convergent).each do |f|
    describe file(f) do
      it { should be_file }
    end
  end
end

control 'install-deb-runs' do
  describe command('convergent version') do
    its('exit_status') { should eq 0 }
    its('stdout') { should match(/\Aconvergent 0\.1\.0 \(commit \h{12}, /) }
  end
  describe command('/usr/local/bin/convergent --store file:/tmp/kitchen/data/views/web-converged.yml ' \
                   'attributes --cluster web --node web-01') do
    its('exit_status') { should eq 0 }
    its('stdout') { should match(/"state": "converged"/) }
  end
  # As root with the default cache folder: the result is cached there.
  describe file('/var/cache/convergent/web/web-01.json') do
    it { should be_file }
    its('mode') { should cmp '0600' }
  end
end
