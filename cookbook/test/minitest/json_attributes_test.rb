# frozen_string_literal: true

require_relative 'test_helper'

# Which -j files the cookbook takes as a reading of the view (the rest of
# Convergent::JsonAttributes, moving it out of normal attributes, is a Chef
# run's business: the json-attributes kitchen suite).
class JsonAttributesTest < Minitest::Test
  include ConvergentTest::Sandbox

  def test_an_attributes_file_is_a_reading
    view('fleet')
    convergent!("--store=file:#{path('view.yml')}", 'attributes', '--cluster=queue', '--node=web-01',
                "--output=#{path('attributes.json')}")
    reading = Convergent::JsonAttributes.reading(path('attributes.json'))
    assert_equal 'queue', reading['cluster']
    assert_equal '7.1.0', reading['desired']['version']
    assert_predicate reading['desired'], :frozen?
  end

  def test_other_json_files_are_not_a_reading
    File.write(path('dna.json'), JSON.generate('run_list' => ['recipe[x]'], 'convergent' => { 'cluster' => 'web' }))
    File.write(path('broken.json'), '{"convergent": ')
    [nil, path('dna.json'), path('broken.json'), path('missing.json'), 'https://example.com/dna.json'].each do |j|
      assert_nil Convergent::JsonAttributes.reading(j), j.inspect
    end
  end

  def test_a_reading_with_parts_missing_is_refused_naming_the_file
    File.write(path('half.json'), JSON.generate('convergent' => { 'cluster' => 'web', 'generation' => '0123456789abcdef' }))
    error = assert_raises(Convergent::Error) { Convergent::JsonAttributes.reading(path('half.json')) }
    assert_match(/half\.json \(passed with -j\) is not a whole convergent attributes document/, error.message)
  end
end
