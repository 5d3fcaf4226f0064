# frozen_string_literal: true

#
# Cookbook:: convergent
# Library:: error
#
# The error every call of the binary raises, with what an operator needs to
# act on it: the exit code and what it means, the command (which never holds
# a secret: credentials go through the environment or a file), and stderr.
#
# Plain Ruby: used by Chef recipes and by the minitest suite alike.

require 'shellwords'

module Convergent
  # The binary's exit codes (its README, "Exit codes"), and what each means.
  EXIT_CODES = {
    1 => 'some present member has not converged',
    64 => 'usage: bad flag or argument',
    65 => 'bad data in the store or a file',
    69 => 'the store is unavailable and no usable cache could stand in',
    73 => 'cannot write the output file or the cache',
    75 => 'temporary failure: a compare-and-set kept losing, or a lock is held',
    77 => 'permission denied by the store',
    78 => 'bad configuration',
  }.freeze

  # An argument vector as one readable line: words quoted only when they
  # need it (`--store=file:/x.yml` stays as it is).
  def self.command_line(argv)
    argv.map { |word| word.match?(%r{\A[\w./:=,@%+-]+\z}) ? word : Shellwords.escape(word) }.join(' ')
  end

  # A call of the binary failed (or could not be made).
  class Error < StandardError
    # [Integer, nil] the binary's exit code; nil when it did not exit on its own
    attr_reader :exit_code
    # [Array<String>] the argument vector run (no secrets by construction)
    attr_reader :command
    # [String] what the binary printed on stderr (secrets redacted)
    attr_reader :stderr

    def initialize(message, exit_code: nil, command: [], stderr: '')
      @exit_code = exit_code
      @command = command.dup.freeze
      @stderr = stderr.to_s
      super(message)
    end

    # What the exit code means, e.g. "bad data in the store or a file".
    def meaning
      EXIT_CODES[exit_code]
    end

    # The command as one line, for messages.
    def command_line
      Convergent.command_line(command)
    end

    # Bad data in the store or a file (65).
    def bad_data?
      exit_code == 65
    end

    # The store could not be reached and no cache could stand in (69).
    def unavailable?
      exit_code == 69
    end

    # The store refused the credentials (77).
    def permission_denied?
      exit_code == 77
    end

    # The configuration is wrong (78).
    def bad_config?
      exit_code == 78
    end

    # The binary was stopped because it ran past the client's timeout.
    def timeout?
      false
    end
  end

  # The binary ran past the client's `command_timeout` and was killed.
  class TimeoutError < Error
    def timeout?
      true
    end
  end
end
