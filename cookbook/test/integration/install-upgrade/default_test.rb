# install-upgrade: after 0.0.9 -> 0.1.0 (first converge) and 0.1.0 -> 0.0.9
# -> 0.1.0 (second), each format is at 0.1.0 and nothing of 0.0.9 is left.

target = { 'x86_64' => 'x86_64-unknown-linux-musl', 'aarch64' => 'aarch64-unknown-linux-musl' }.fetch(os.arch)

control 'install-upgrade-tarball' do
  describe file('/usr/local/bin/convergent') do
    its('link_path') { should eq "/opt/convergent/0.1.0-#{target}/convergent" }
  end
  describe command('ls /opt/convergent') do
    its('stdout') { should eq "0.1.0-#{target}\n" }
  end
end

control 'install-upgrade-deb' do
  describe package('convergent') do
    it { should be_installed }
    its('version') { should eq '0.1.0' }
  end
  describe command('/usr/bin/convergent version') do
    its('exit_status') { should eq 0 }
  end
end
