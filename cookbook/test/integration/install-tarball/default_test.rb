# install-tarball: the release tarball unpacked under /opt/convergent, the
# binary linked from /usr/local/bin, and it runs.

target = { 'x86_64' => 'x86_64-unknown-linux-musl', 'aarch64' => 'aarch64-unknown-linux-musl' }.fetch(os.arch)
dir = "/opt/convergent/0.1.0-#{target}"

control 'install-tarball-files' do
  describe file('/usr/local/bin/convergent') do
    it { should be_symlink }
    its('link_path') { should eq "#{dir}/convergent" }
  end
  describe file("#{dir}/convergent") do
    it { should be_file }
    its('mode') { should cmp '0755' }
    its('owner') { should eq 'root' }
  end
  %w(README.md LICENSE man/man1/convergent.1 completions/convergent.bash).each do |f|
    describe file("#{dir}/#{f}") do
      it { should be_file }
    end
  end
  describe file("#{dir}/.tarball-sha256") do
    its('content') { should match(/\A\h{64}\n\z/) }
  end
  describe command('ls /opt/convergent') do
    its('stdout') { should eq "0.1.0-#{target}\n" }
  end
end

control 'install-tarball-runs' do
  describe command('/usr/local/bin/convergent version') do
    its('exit_status') { should eq 0 }
    its('stdout') { should match(/\Aconvergent 0\.1\.0 \(commit \h{12}, built \d{4}-\d\d-\d\d\)\ntarget: #{target}\n/) }
  end
  describe command('/usr/local/bin/convergent --store file:/tmp/kitchen/data/views/web-converged.yml ' \
                   '--cache-dir /tmp/kitchen/cache attributes --cluster web --node web-01') do
    its('exit_status') { should eq 0 }
    its('stdout') { should match(/"state": "converged"/) }
  end
end
