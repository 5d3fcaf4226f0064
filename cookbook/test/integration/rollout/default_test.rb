# rollout: an orchestration node runs plan upgrade-5.1-2.5.0 (db to 5.1 and
# web to 2.5.0 by a canary and halves, at the same time, web requiring every
# db node at >=5.1) with convergent_rollout, on the
# view of test/fixtures/views/tiers.yml whose nodes the plan's kick
# simulates. test/fixtures/chef-runs ran, in order: a run with a plan the
# schema refuses (run-broken.log), a why-run (run-0), a run while another
# orchestrator holds the plan's lock (run-locked.log), then Kitchen's two
# converges (run-1, run-2), keeping the store's plans and desired documents
# after each.

convergent = '/usr/local/bin/convergent'
store = 'file:/tmp/kitchen/data/views/tiers.yml'
state = '/var/lib/convergent-test'
plan = 'upgrade-5.1-2.5.0'

control 'rollout-a-failed-plan-fails-the-run' do
  describe file("#{state}/run-broken.log") do
    its('content') { should match(/convergent_rollout\[broken\]/) }
    its('content') { should match(/convergent rollout run exited 65 \(bad data in the store or a file\): convergent: error: .*bogus/) }
  end
end

control 'rollout-why-run-prints-the-dry-run-and-moves-nothing' do
  describe file("#{state}/run-0.log") do
    its('content') { should match(/Would run plan #{plan} \(not started\); its dry run:/) }
    its('content') { should match(/plan #{plan}: 2 steps \(dry run: nothing is written\)/) }
    its('content') { should match(/runs as: db \+ web/) }
    its('content') { should match(/step 1: cluster db, rollout #{plan}\.1/) }
    its('content') { should match(/canary +\(1\): web-0\d/) }
  end
  describe file("#{state}/plans-after-run-0.json") do
    its('content') { should eq "null\n" }
  end
  describe json("#{state}/web-after-run-0.json") do
    its('version') { should eq '2.4.1' }
  end
  describe json("#{state}/db-after-run-0.json") do
    its('version') { should eq '5.0' }
  end
end

# Another orchestrator (test/fixtures/chef-runs holds the plan's lock as
# "orch-2") is running the plan: the run fails with 75 naming the holder,
# and nothing moves.
control 'rollout-a-plan-run-elsewhere-fails-the-run-naming-the-holder' do
  describe file("#{state}/run-locked.log") do
    its('content') { should match(/convergent rollout run exited 75 \(temporary failure[^)]*\): convergent: error: lock convergent\/locks\/plan-#{Regexp.escape(plan)} is held by orchestrator on orch-2 \(pid 4242\)/) }
  end
  describe file("#{state}/plans-after-run-locked.json") do
    its('content') { should eq "null\n" }
  end
  describe json("#{state}/db-after-run-locked.json") do
    its('version') { should eq '5.0' }
  end
end

control 'rollout-run-1-completes-the-plan' do
  describe file("#{state}/run-1.log") do
    its('content') { should match(/move plan #{plan}: not started -> completed, 2\/2 steps done/) }
  end
  describe json("#{state}/plans-after-run-1.json") do
    its([plan, 'status']) { should eq 'completed' }
    its([plan, 'done']) { should eq 2 }
  end
  describe json("#{state}/web-after-run-1.json") do
    its('version') { should eq '2.5.0' }
  end
  describe json("#{state}/db-after-run-1.json") do
    its('version') { should eq '5.1' }
  end
  # Every simulated node checked in at its new desired state.
  %w(web db).each do |cluster|
    describe command("#{convergent} --store #{store} status --cluster #{cluster} --check") do
      its('exit_status') { should eq 0 }
    end
  end
  describe command("#{convergent} --store #{store} --format json rollout status") do
    its('stdout') { should match(/\A\[\]\s*\z/) }
  end
end

# The simulated nodes' check-ins, in order (test/fixtures/rollout-node):
# db and web ran at the same time in one plan, yet no web node checked in at
# 2.5.0 before every db node had checked in at 5.1.
control 'rollout-web-waited-for-db' do
  log = '/var/lib/convergent-test/nodes/check-ins.log'
  lines = file(log).content.to_s.lines.map(&:split)
  first_web = lines.index { |c, _, v| c == 'web' && v == '2.5.0' }
  db_done = %w(db-01 db-02).map { |n| lines.index { |c, node, v| c == 'db' && node == n && v == '5.1' } }
  describe 'the first web check-in at 2.5.0' do
    it('exists') { expect(first_web).not_to be_nil }
    it('comes after every db node checked in at 5.1') do
      expect(db_done).to all(be_a(Integer))
      expect(db_done.compact.all? { |i| i < first_web.to_i }).to eq true
    end
  end
end
