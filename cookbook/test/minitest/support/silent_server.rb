# frozen_string_literal: true

# A "store" on a free loopback port that accepts connections and never
# answers: what a hung server looks like to a client.

require 'socket'

class SilentServer
  def initialize
    @server = TCPServer.new('127.0.0.1', 0)
    @held = Queue.new
    @thread = Thread.new do
      loop { @held << @server.accept }
    rescue IOError
      nil
    end
  end

  def port
    @server.addr[1]
  end

  def close
    @server.close
    @thread.join(1)
    @held.pop.close until @held.empty?
  end
end
