# frozen_string_literal: true

require 'fileutils'
require 'json'
require 'mixlib/shellout'
require 'net/http'
require 'socket'

module ConvergentTest
  # A real `consul agent -dev` with ACLs on (default deny), for the
  # credentials suite: started once per machine (test/fixtures/bin/consul,
  # staged by test/kitchen-prepare from $CONVERGENT_KITCHEN_CONSUL), on free
  # loopback ports, with the fleet view imported. The port is kept in
  # DIR/http.port for the later runs and InSpec; the agent lives until the
  # suite's throw-away machine (machine.sh) ends.
  module ConsulAgent
    READY_TIMEOUT = 30

    module_function

    # @return [Integer] the agent's HTTP port
    def ensure_running(consul:, dir:, management:, convergent:, view:)
      port_file = ::File.join(dir, 'http.port')
      port = ::File.read(port_file).to_i if ::File.exist?(port_file)
      return port if port && ready?(port, management)

      FileUtils.mkdir_p(dir)
      port = free_port
      config = {
        'node_name' => 'convergent-kitchen', 'bind_addr' => '127.0.0.1', 'client_addr' => '127.0.0.1',
        'advertise_addr' => '127.0.0.1', 'disable_update_check' => true, 'log_level' => 'warn',
        'ports' => { 'http' => port, 'dns' => -1, 'grpc' => -1, 'serf_lan' => free_port,
                     'serf_wan' => free_port, 'server' => free_port },
        # Consul 1.10: `master` (`initial_management` from 1.11)
        'acl' => { 'enabled' => true, 'default_policy' => 'deny', 'enable_token_persistence' => false,
                   'tokens' => { 'master' => management } },
      }
      ::File.write(::File.join(dir, 'agent.json'), JSON.generate(config))
      pid = Process.spawn(consul, 'agent', '-dev', '-config-file', ::File.join(dir, 'agent.json'),
                          in: '/dev/null', out: ::File.join(dir, 'consul.log'), err: [:child, :out], pgroup: true)
      Process.detach(pid)
      deadline = Time.now + READY_TIMEOUT
      sleep 0.2 until ready?(port, management) || Time.now > deadline
      raise "consul agent not ready on port #{port} after #{READY_TIMEOUT}s: see #{dir}/consul.log" unless ready?(port, management)

      Mixlib::ShellOut.new(convergent, "--store=consul://127.0.0.1:#{port}", 'import', view,
                           environment: { 'CONSUL_HTTP_TOKEN' => management }, timeout: 30).run_command.error!
      ::File.write(port_file, port.to_s)
      port
    end

    # A leader, and the KV store answering the management token.
    def ready?(port, token)
      http = Net::HTTP.new('127.0.0.1', port)
      http.open_timeout = http.read_timeout = 2
      leader = http.get('/v1/status/leader')
      return false unless leader.code == '200' && JSON.parse(leader.body).to_s != ''
      http.get('/v1/kv/convergent-kitchen-ready', 'X-Consul-Token' => token).code == '404'
    rescue StandardError
      false
    end

    def free_port
      server = TCPServer.new('127.0.0.1', 0)
      server.addr[1]
    ensure
      server&.close
    end
  end
end
