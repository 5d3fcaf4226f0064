# frozen_string_literal: true

module ConvergentTest
  # What recipes/fail_on_flag.rb raises: the class the check-in must name.
  class IntendedFailure < StandardError; end
end
