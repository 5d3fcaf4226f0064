# rollout-no-wait: convergent_rollout 'web-2.5.0' with `wait false`. Before
# run 1 (test/fixtures/chef-runs), a run with every node down started the
# orchestrator in the background (start-stop-daemon), which released the
# canary and was then killed; the nodes came back and checked in once. Run 1
# started a new orchestrator, which resumed the plan, and returned once it
# had moved the plan; run 2 ran nothing. The orchestrator goes on by itself
# to the end of the plan.

convergent = '/usr/local/bin/convergent'
store = 'file:/tmp/kitchen/data/views/tiers.yml'
state = '/var/lib/convergent-test'
plan = 'web-2.5.0'

control 'rollout-no-wait-a-killed-orchestrator-left-the-canary-released' do
  describe file("#{state}/run-crash.log") do
    its('content') { should match(/move plan #{plan}: not started -> running, 0\/1 steps done; web: rollout #{plan}\.1 running, 1 batches released/) }
  end
  describe json("#{state}/plans-after-run-crash.json") do
    its([plan, 'status']) { should eq 'running' }
    its([plan, 'done']) { should eq 0 }
  end
end

control 'rollout-no-wait-run-1-started-a-new-orchestrator-that-resumed-the-plan' do
  describe file("#{state}/run-1.log") do
    its('content') { should match(/move plan #{plan}: running, 0\/1 steps done; web: rollout #{plan}\.1 running, 1 batches released \(threshold [\d.]+\) -> /) }
  end
  describe file("/var/lib/convergent/plans/#{plan}.yml") do
    its('mode') { should cmp '0640' }
    its('content') { should match(/"name": "#{plan}"/) }
  end
end

control 'rollout-no-wait-the-orchestrator-completes-the-plan' do
  # Polls the store until the background orchestrator has completed it.
  describe command("timeout 60 sh -c 'until #{convergent} --store #{store} --format json get plans/#{plan} | grep -q \"\\\"status\\\": \\\"completed\\\"\"; do sleep 0.2; done'") do
    its('exit_status') { should eq 0 }
  end
  describe command("#{convergent} --store #{store} --format json get clusters/web/desired") do
    its('stdout') { should match(/"version": "2.5.0"/) }
  end
  describe command("#{convergent} --store #{store} status --cluster web --check") do
    its('exit_status') { should eq 0 }
  end
  describe file("/var/log/convergent/rollout-#{plan}.log") do
    its('content') { should match(/plan #{plan} completed/) }
  end
  # Its process ended with the plan (polled: it may take a moment to exit;
  # here nothing reaps it, so it ends a zombie).
  describe command("timeout 30 sh -c 'pid=$(cat /run/convergent-rollout-#{plan}.pid); " \
                   "while [ -e /proc/$pid ] && ! grep -q \"^State:.*Z\" /proc/$pid/status; do sleep 0.2; done'") do
    its('exit_status') { should eq 0 }
  end
end

control 'rollout-no-wait-run-2-runs-nothing' do
  describe file("#{state}/run-2.log") do
    its('content') { should_not match(/move plan/) }
  end
end
