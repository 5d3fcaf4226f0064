# converge-time-why-run: the converge-time example converged web-01 (run 1),
# then ran again in why-run (run 2). The why-run worked (its ruby_block does
# not run in why-run; the later resources still find the desired state) and
# wrote no check-in, failure or otherwise.

convergent = '/usr/local/bin/convergent'
# web-01's check-in after run 1 and after run 2 (test/fixtures/chef-runs)
after1 = json('/var/lib/convergent-test/observed-after-run-1.json')
after2 = json('/var/lib/convergent-test/observed-after-run-2.json')
run1_generation = after1.params['generation']

control 'converge-time-why-run-works' do
  describe file('/var/lib/convergent-test/run-2.log') do
    its('content') { should match(/why-run/) }
    its('content') { should_not match(/NoMethodError|FATAL/) }
    its('content') { should match(/convergent: why-run: no check-in/) }
    its('content') { should_not match(/reported (success|failure)/) }
  end
end

control 'converge-time-why-run-check-in' do
  describe after1 do
    its('status') { should eq 'success' }
    its('generation') { should match(/\A\h{16}\z/) }
  end
  describe 'the check-in after the why-run' do
    it('is the one of run 1, untouched') { expect(after2.params).to eq after1.params }
  end
  describe command("#{convergent} status --cluster web --check") do
    its('exit_status') { should eq 0 }
  end
end

control 'converge-time-why-run-service' do
  describe command('/etc/init.d/convergent-web status') do
    its('exit_status') { should eq 0 }
  end
end
