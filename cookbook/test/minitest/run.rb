# frozen_string_literal: true

# Runs every *_test.rb of this folder (scripts/test calls it).
# CONVERGENT_TEST_FILTER, words separated by spaces, keeps only the tests
# whose name contains one of them, like `cargo test`'s filter.

filters = ENV.fetch('CONVERGENT_TEST_FILTER', '').split
ARGV.push('-n', "/#{filters.map { |f| Regexp.escape(f) }.join('|')}/") unless filters.empty?
Dir[File.join(__dir__, '*_test.rb')].sort.each { |test| require test }
