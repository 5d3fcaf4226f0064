# frozen_string_literal: true

#
# Cookbook:: convergent
# Resource:: convergent_health_check
#
# Declares a health check on the service a recipe manages: an HTTP answer,
# a TCP port or a command. The run's check-in carries its result, and
# `convergent health` / `convergent watch` re-run it between runs, so an
# orchestrator gated on health (`wait: {healthy: true}`) sees a node that
# converged but does not work. Declaring changes nothing on the node: the
# report handler writes the run's checks next to the attributes file
# (CLUSTER.checks.json) and reports with them.
#
#   convergent_health_check 'web-http' do
#     cluster 'web'
#     http 'http://127.0.0.1:8080/health'
#     timeout '2s'
#   end

provides :convergent_health_check
unified_mode true

property :check_name, String, name_property: true,
         regex: /\A[A-Za-z0-9][A-Za-z0-9._-]{0,62}\z/,
         description: 'The check name, unique per node (letters, digits, `.`, `-`, `_`)'
property :cluster, String, default: lazy { node['convergent']['cluster'] },
         description: 'The cluster whose check-in carries the check'
property :http, [String, nil], regex: [%r{\Ahttps?://[^@/\s]+(/\S*)?\z}, nil],
         description: 'GET this URL; passes on a 2xx answer (or expect_status); no credentials in it'
property :expect_status, [Integer, nil], description: 'The HTTP status that passes instead of any 2xx'
property :tcp, [String, nil], regex: [/\A\S+:\d{1,5}\z/, nil],
         description: 'HOST:PORT that must accept a connection'
property :command, [Array, nil],
         description: 'A command (argument array, no shell) that must exit 0'
property :timeout, String, default: '5s', regex: /\A\d+(ms|s|m)\z/,
         description: 'Bound on the check (at most 5m)'

default_action :declare

action :declare do
  probes = { 'http' => new_resource.http, 'tcp' => new_resource.tcp, 'command' => new_resource.command }.compact
  unless probes.size == 1
    raise ArgumentError, "convergent_health_check[#{new_resource.check_name}]: give exactly one of http, tcp or command"
  end
  raise ArgumentError, "convergent_health_check[#{new_resource.check_name}]: no cluster (set the cluster property or node['convergent']['cluster'])" unless new_resource.cluster
  spec = probes.merge('timeout' => new_resource.timeout)
  spec['expect_status'] = new_resource.expect_status if new_resource.expect_status
  Convergent::RunState.new(node.run_state).declare_check(new_resource.cluster, new_resource.check_name, spec)
  Chef::Log.info("convergent: health check #{new_resource.check_name} declared for cluster #{new_resource.cluster}")
end
