# frozen_string_literal: true

# The cookbook's plain-Ruby tests: the libraries driven against the real
# `convergent` binary (CONVERGENT_BIN, else target/debug/convergent of the
# repository) and real fixture views, each test in a temporary folder of
# its own.
#
#   ruby -Itest/minitest -e 'Dir["test/minitest/*_test.rb"].each { |f| require "./#{f}" }'

require 'minitest/autorun'
require 'erb'
require 'fileutils'
require 'json'
require 'logger'
require 'tmpdir'
require 'yaml'

COOKBOOK = File.expand_path('../..', __dir__)
Dir[File.join(COOKBOOK, 'libraries', '*.rb')].sort.each { |lib| require lib }

# What the tests run the binary as, and with.
module ConvergentTest
  BINARY = ENV['CONVERGENT_BIN'] || File.expand_path('../target/debug/convergent', COOKBOOK)
  VIEWS = File.join(COOKBOOK, 'test', 'fixtures', 'views')

  unless File.executable?(BINARY)
    abort "convergent binary not found at #{BINARY}: run `cargo build` first, or set CONVERGENT_BIN"
  end

  # The binary reads these; a developer's shell must not change the tests.
  ENV.keys.grep(/\A(CONVERGENT_|ETCDCTL_|CONSUL_HTTP_)/).each { |name| ENV.delete(name) }

  # A logger that keeps what it was told.
  class Log
    attr_reader :lines

    def initialize
      @lines = []
    end

    %i(debug info warn error).each do |level|
      define_method(level) { |message = nil| @lines << [level, message.to_s] }
    end

    def of(level)
      @lines.select { |l, _| l == level }.map(&:last)
    end
  end

  # A temporary folder per test, a copy of a fixture view in it, and a
  # client for that view.
  module Sandbox
    def setup
      super
      @dir = Dir.mktmpdir('convergent-cookbook-test')
      @log = Log.new
      # An empty config file, so that no /etc/convergent/config.yml is read.
      @config = File.join(@dir, 'config.yml')
      File.write(@config, '')
    end

    def teardown
      FileUtils.rm_rf(@dir)
      super
    end

    def path(name)
      File.join(@dir, name)
    end

    # Copies test/fixtures/views/NAME.yml into the folder; returns its path.
    def view(name = 'web-converged')
      FileUtils.cp(File.join(VIEWS, "#{name}.yml"), path('view.yml'))
      path('view.yml')
    end

    def client(**settings)
      Convergent::Client.new(
        binary: BINARY, store: "file:#{path('view.yml')}", config_file: @config,
        cache_dir: path('cache'), logger: @log, **settings
      )
    end

    # Runs the binary directly (for setting up and checking stores).
    def convergent!(*args, env: {})
      shell = Mixlib::ShellOut.new(BINARY, "--config=#{@config}", *args, environment: env, timeout: 30)
      shell.run_command
      assert_equal 0, shell.exitstatus, "convergent #{args.join(' ')}: #{shell.stderr}"
      shell.stdout
    end

    def refute_secret(secret, *texts)
      texts.each { |text| refute_includes text.to_s, secret }
    end
  end
end
