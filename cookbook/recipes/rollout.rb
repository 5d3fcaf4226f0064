#
# Cookbook:: convergent
# Recipe:: rollout
#
# On an orchestration node: runs the plans of node['convergent']['orchestrator']
# with convergent_rollout, in the order given. A completed plan runs
# nothing; one in progress is resumed where its records in the store say it
# stopped. The binary and its config come from convergent::default (or your
# own install and config).

settings = node['convergent']['orchestrator']

settings['plans'].each do |name, plan|
  convergent_rollout name do
    plan plan.is_a?(String) ? plan : Convergent::Rollout.plain(plan)
    wait settings['wait']
    wait_timeout settings['wait_timeout']
    poll settings['poll'] if settings['poll']
    member_ttl settings['member_ttl'] if settings['member_ttl']
  end
end
