# why-run: run 1 converged web-01 to 2.4.1 and checked in; an operator then
# set version 2.5.0, and run 2 was a why-run. It changed nothing and wrote
# no check-in: the store still has run 1's, and `status` says pending.

convergent = '/usr/local/bin/convergent'
# web-01's check-in after run 1 and after run 2 (test/fixtures/chef-runs)
after1 = json('/var/lib/convergent-test/observed-after-run-1.json')
after2 = json('/var/lib/convergent-test/observed-after-run-2.json')
run1_generation = after1.params['generation']

control 'why-run-no-check-in' do
  describe file('/var/lib/convergent-test/run-2.log') do
    its('content') { should match(/why-run/) }
    its('content') { should match(/convergent: why-run: no check-in/) }
    its('content') { should_not match(/reported success/) }
  end
  describe after1 do
    its('status') { should eq 'success' }
    its('generation') { should match(/\A\h{16}\z/) }
  end
  describe 'the check-in after the why-run' do
    it('is the one of run 1, untouched') { expect(after2.params).to eq after1.params }
  end
end

control 'why-run-status-not-converged' do
  describe command("#{convergent} status --cluster web --check") do
    its('exit_status') { should eq 1 }
    its('stdout') { should match(/0 converged, 1 pending/) }
  end
end

control 'why-run-changed-nothing' do
  describe file('/opt/convergent-web/current') do
    its('link_path') { should eq '/opt/convergent-web/releases/2.4.1' }
  end
  describe file('/opt/convergent-web/releases/2.5.0') do
    it { should_not exist }
  end
  describe json('/var/lib/convergent/web.json') do
    its(%w(convergent generation)) { should eq run1_generation }
  end
end
