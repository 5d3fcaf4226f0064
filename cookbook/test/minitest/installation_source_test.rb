# frozen_string_literal: true

require_relative 'test_helper'

class InstallationSourceTest < Minitest::Test
  SHA = 'a' * 64

  def test_a_url_needs_its_sha256
    assert_equal 'https://example.com/convergent', Convergent::InstallationSource.url('https://example.com/convergent', SHA)
    error = assert_raises(Convergent::Error) { Convergent::InstallationSource.url('https://example.com/convergent', nil) }
    assert_includes error.message, 'needs its sha256'
  end

  def test_a_local_path_becomes_a_file_url
    assert_equal 'file:///srv/convergent', Convergent::InstallationSource.url('/srv/convergent', nil)
    assert_equal 'file:///srv/convergent', Convergent::InstallationSource.url('file:///srv/convergent', SHA)
  end

  def test_relative_paths_and_bad_digests_are_refused
    assert_raises(Convergent::Error) { Convergent::InstallationSource.url('bin/convergent', nil) }
    assert_raises(Convergent::Error) { Convergent::InstallationSource.url('/srv/convergent', 'abc') }
  end

  def test_sha256_of_the_real_binary
    expected = Digest::SHA256.hexdigest(File.binread(ConvergentTest::BINARY))
    assert_equal expected, Convergent::InstallationSource.sha256_of(ConvergentTest::BINARY)
  end
end
