#
# Cookbook:: convergent_test
# Recipe:: rollout
#
# An orchestration node: the binary, then convergent::rollout with the
# suite's plans (kitchen.yml attributes) on the view of two tiers
# (test/fixtures/views/tiers.yml), whose nodes test/fixtures/rollout-node
# simulates. While /var/lib/convergent-test/broken-plan exists
# (test/fixtures/chef-runs puts it there for one run), a plan the schema
# refuses runs first, and must fail the run with the orchestrator's message.

include_recipe 'convergent_test::_node'
include_recipe 'convergent::install'

if ::File.exist?('/var/lib/convergent-test/broken-plan')
  convergent_rollout 'broken' do
    plan 'steps' => [{ 'cluster' => 'web', 'set' => { 'state' => 'bogus' } }]
  end
end

include_recipe 'convergent::rollout'
