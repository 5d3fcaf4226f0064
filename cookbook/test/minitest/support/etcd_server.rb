# frozen_string_literal: true

# A real etcd (Debian's etcd-server, or CONVERGENT_TEST_ETCD_BIN) on free
# loopback ports with a temporary data folder, ready when /health says so,
# stopped (TERM, then KILL) by #stop, which the tests call from teardown.

require 'base64'
require 'json'
require 'net/http'
require 'socket'
require 'tmpdir'

class EtcdServer
  READY_TIMEOUT = 30

  attr_reader :client_port

  def self.start
    server = new
    server.start
    server
  end

  def initialize
    @dir = Dir.mktmpdir('convergent-etcd')
  end

  def start
    3.times do |attempt|
      @client_port = free_port
      peer = free_port
      @pid = Process.spawn(
        ENV.fetch('CONVERGENT_TEST_ETCD_BIN', 'etcd'),
        '--name', 'solo', '--data-dir', File.join(@dir, 'data'),
        '--listen-client-urls', "http://127.0.0.1:#{@client_port}",
        '--advertise-client-urls', "http://127.0.0.1:#{@client_port}",
        '--listen-peer-urls', "http://127.0.0.1:#{peer}",
        '--initial-advertise-peer-urls', "http://127.0.0.1:#{peer}",
        '--initial-cluster', "solo=http://127.0.0.1:#{peer}",
        '--initial-cluster-state', 'new',
        in: File::NULL, out: log_path, err: log_path
      )
      return if wait_ready
      # Another process may have taken a port between pick and bind.
      stop_process
      raise "etcd did not start; log:\n#{File.read(log_path).lines.last(20).join}" if attempt == 2
    end
  end

  def addr
    "127.0.0.1:#{@client_port}"
  end

  def url
    "etcd://#{addr}"
  end

  # Turns authentication on: root, and `user` whose role reads and writes
  # everything under `prefix`.
  def enable_auth(root_password:, user:, password:, prefix:)
    range_end = prefix.dup
    range_end[-1] = (range_end[-1].ord + 1).chr
    [
      ['auth/user/add', { name: 'root', password: root_password }],
      ['auth/role/add', { name: 'root' }],
      ['auth/user/grant', { user: 'root', role: 'root' }],
      ['auth/role/add', { name: 'convergent' }],
      ['auth/role/grant', { name: 'convergent', perm: { permType: 'READWRITE', key: Base64.strict_encode64(prefix),
                                                        range_end: Base64.strict_encode64(range_end) } }],
      ['auth/user/add', { name: user, password: password }],
      ['auth/user/grant', { user: user, role: 'convergent' }],
      ['auth/enable', {}],
    ].each { |api, body| post(api, body) }
  end

  def stop
    stop_process
    FileUtils.rm_rf(@dir)
  end

  private

  def log_path
    File.join(@dir, 'etcd.log')
  end

  def free_port
    server = TCPServer.new('127.0.0.1', 0)
    server.addr[1]
  ensure
    server&.close
  end

  def wait_ready
    deadline = Time.now + READY_TIMEOUT
    while Time.now < deadline
      return false if Process.waitpid(@pid, Process::WNOHANG)
      return true if healthy?
      sleep 0.05
    end
    false
  end

  def healthy?
    response = Net::HTTP.start('127.0.0.1', @client_port, open_timeout: 1, read_timeout: 1) { |h| h.get('/health') }
    response.body.include?('"true"')
  rescue SystemCallError, IOError, Net::OpenTimeout, Net::ReadTimeout
    false
  end

  def post(api, body)
    response = Net::HTTP.start('127.0.0.1', @client_port, read_timeout: 10) do |http|
      http.post("/v3/#{api}", JSON.generate(body), 'Content-Type' => 'application/json')
    end
    raise "POST /v3/#{api}: #{response.code} #{response.body}" unless response.code == '200'
  end

  def stop_process
    return unless @pid
    Process.kill('TERM', @pid)
    deadline = Time.now + 5
    reaped = nil
    sleep 0.02 until (reaped = Process.waitpid(@pid, Process::WNOHANG)) || Time.now > deadline
    unless reaped
      Process.kill('KILL', @pid)
      Process.waitpid(@pid)
    end
  rescue Errno::ESRCH, Errno::ECHILD
    nil
  ensure
    @pid = nil
  end
end
