# rollout-resume: convergent_rollout 'web-2.5.0' (wait, wait_timeout 8) on
# the view of test/fixtures/views/tiers.yml. test/fixtures/chef-runs ran a
# run whose plan could not complete (nothing ran web's nodes again), which
# stopped the orchestrator at wait_timeout and failed (run-timeout.log);
# then web's nodes checked in every 0.3 s, and Kitchen's run 1 resumed the
# plan where it stood, to completed; run 2 ran nothing.

convergent = '/usr/local/bin/convergent'
store = 'file:/tmp/kitchen/data/views/tiers.yml'
state = '/var/lib/convergent-test'
plan = 'web-2.5.0'

control 'rollout-resume-a-timed-out-run-fails-saying-where-the-plan-stands' do
  describe file("#{state}/run-timeout.log") do
    its('content') do
      should match(/convergent_rollout web-2.5.0: the plan did not complete within wait_timeout 8s; its orchestrator was stopped and the next run resumes it where it stands \(running, 0\/1 steps done; web: rollout web-2.5.0.1 running, 1 batches released \(threshold 0\.\d\d\)\)/)
    end
  end
  describe json("#{state}/plans-after-run-timeout.json") do
    its([plan, 'status']) { should eq 'running' }
    its([plan, 'done']) { should eq 0 }
  end
end

control 'rollout-resume-run-1-resumes-the-plan-to-completed' do
  describe file("#{state}/run-1.log") do
    its('content') { should match(/move plan #{plan}: running, 0\/1 steps done; web: rollout #{plan}.1 running, 1 batches released \(threshold 0\.\d\d\) -> completed, 1\/1 steps done/) }
  end
  describe json("#{state}/plans-after-run-1.json") do
    its([plan, 'status']) { should eq 'completed' }
  end
  describe json("#{state}/web-after-run-1.json") do
    its('version') { should eq '2.5.0' }
  end
  describe command("#{convergent} --store #{store} status --cluster web --check") do
    its('exit_status') { should eq 0 }
  end
end
