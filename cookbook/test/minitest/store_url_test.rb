# frozen_string_literal: true

require_relative 'test_helper'

class StoreUrlTest < Minitest::Test
  def test_a_token_file_is_passed_the_way_each_store_reads_it
    assert_equal ['etcd://h:2379?password_file=/etc/t', {}],
                 Convergent::StoreUrl.with_token_file('etcd://h:2379', '/etc/t')
    assert_equal ['etcd+https://h:2379?consistency=serializable&password_file=/etc/t', {}],
                 Convergent::StoreUrl.with_token_file('etcd+https://h:2379?consistency=serializable', '/etc/t')
    assert_equal ['consul://h:8500', { 'CONSUL_HTTP_TOKEN_FILE' => '/etc/t' }],
                 Convergent::StoreUrl.with_token_file('consul://h:8500', '/etc/t')
    assert_equal ['file:/v.yml', {}], Convergent::StoreUrl.with_token_file('file:/v.yml', nil)
  end

  def test_a_token_file_that_cannot_apply_is_refused
    assert_raises(Convergent::Error) { Convergent::StoreUrl.with_token_file('file:/v.yml', '/etc/t') }
    assert_raises(Convergent::Error) { Convergent::StoreUrl.with_token_file(nil, '/etc/t') }
    assert_raises(Convergent::Error) { Convergent::StoreUrl.with_token_file('etcd://h:1', 'relative/t') }
    assert_raises(Convergent::Error) { Convergent::StoreUrl.with_token_file('etcd://h:1', '/etc/a&b') }
    assert_raises(Convergent::Error) { Convergent::StoreUrl.with_token_file('etcd://h:1?password_file=/x', '/etc/t') }
  end

  def test_urls_with_credentials_or_unknown_schemes_are_refused
    assert_nil Convergent::StoreUrl.check!('etcd://h:2379,h2:2379')
    error = assert_raises(Convergent::Error) { Convergent::StoreUrl.check!('consul://tok3n@h:8500') }
    refute_includes error.message, 'tok3n'
    assert_raises(Convergent::Error) { Convergent::StoreUrl.check!('redis://h:1') }
    # An @ after the authority is not a credential.
    assert_nil Convergent::StoreUrl.check!('file:/srv/views/v@1.yml')
  end
end
