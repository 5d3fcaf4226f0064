# The rollout suites whose run 1 ends with the plan where it stays (rollout,
# rollout-resume): run 2 must not move it. test/fixtures/chef-runs keeps
# each run's log and the store's plan records after it.

state = '/var/lib/convergent-test'

control 'rollout-run-2-runs-nothing' do
  describe file("#{state}/run-2.log") do
    its('content') { should_not match(/move plan/) }
  end
  describe 'the plan record after run 2' do
    it('is the one of run 1, untouched') do
      expect(json("#{state}/plans-after-run-2.json").params).to eq json("#{state}/plans-after-run-1.json").params
    end
  end
end
