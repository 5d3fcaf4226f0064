# frozen_string_literal: true

require_relative 'test_helper'
require_relative 'support/fake_node'
require_relative 'support/settings'

# The recipe helpers, on a stand-in for Chef's node, against the real binary.
class DslTest < Minitest::Test
  include ConvergentTest::Sandbox
  include ConvergentTest::Settings

  def recipe(node_name: 'web-01', **overrides)
    FakeRecipe.new(FakeNode.new(node_name, 'convergent' => settings(**overrides)))
  end

  def test_the_compile_time_read_happens_once_per_run
    view('web-waiting')
    r = recipe
    assert_equal 'waiting', r.convergent_state('web')
    assert_equal '2.4.1', r.convergent_desired('web')['version']
    # A second read would find the store gone and serve the cache, marked stale.
    File.delete(path('view.yml'))
    refute r.convergent_stale?('web')
    assert_same r.node.run_state['convergent']['web'], r.convergent_result('web')
    assert_match(/\A\h{16}\z/, r.convergent_generation('web'))
  end

  def test_convergent_read_asks_again_and_replaces_the_runs_result
    view
    r = recipe
    first = r.convergent_result('web')
    File.delete(path('view.yml'))
    again = r.convergent_read('web')
    assert_equal true, again['source']['stale']
    assert_equal first['generation'], again['generation']
    assert_same again, r.node.run_state['convergent']['web']
    assert r.convergent_stale?('web')
  end

  def test_the_attributes_file_is_written_and_kept_for_the_report
    view
    r = recipe
    r.convergent_desired('web')
    file = path('lib/web.json')
    assert_equal({ 'web' => file }, Convergent::RunState.new(r.node.run_state).attributes_files)
    assert_equal 'web-01', JSON.parse(File.read(file))['convergent']['node']
  end

  def test_the_node_name_is_the_attribute_else_the_chef_node_name
    view
    assert_equal 'chef-name', recipe(node_name: 'chef-name').convergent_node_name
    r = recipe(node_name: 'chef-name', node: 'web-07')
    assert_equal 'web-07', r.convergent_node_name
    assert_equal 'web-07', r.convergent_result('web')['node']
  end

  def test_credentials_come_from_run_state_not_from_attributes
    r = recipe
    r.node.run_state['convergent_credentials'] = { 'ETCDCTL_PASSWORD' => 'not-an-attribute' }
    c = r.convergent_client
    assert_includes c.inspect, 'ETCDCTL_PASSWORD'
    refute_includes c.inspect, 'not-an-attribute'
  end

  def test_a_failed_read_leaves_nothing_in_run_state
    r = recipe
    assert_raises(Convergent::Error) { r.convergent_desired('web') }
    assert_nil Convergent::RunState.new(r.node.run_state)['web']
    assert_empty Convergent::RunState.new(r.node.run_state).attributes_files
  end
end
