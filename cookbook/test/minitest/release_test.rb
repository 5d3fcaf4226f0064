# frozen_string_literal: true

require_relative 'test_helper'

class ReleaseTest < Minitest::Test
  def test_machines_map_to_targets_and_debian_architectures
    assert_equal %w(x86_64-unknown-linux-musl amd64), Convergent::Release.arch_of('x86_64')
    assert_equal %w(aarch64-unknown-linux-musl arm64), Convergent::Release.arch_of('aarch64')
    error = assert_raises(Convergent::Error) { Convergent::Release.arch_of('ppc64le') }
    assert_includes error.message, 'ppc64le'
  end

  def test_placeholders_are_filled_from_version_and_machine
    assert_equal 'https://a.example.com/0.2.0/convergent-0.2.0-aarch64-unknown-linux-musl.tar.gz',
                 Convergent::Release.expand('https://a.example.com/%{version}/convergent-%{version}-%{target}.tar.gz',
                                            version: '0.2.0', machine: 'aarch64')
    assert_equal '/srv/convergent_0.2.0_amd64.deb%20',
                 Convergent::Release.expand('/srv/convergent_%{version}_%{arch}.deb%20', version: '0.2.0', machine: 'x86_64')
  end

  def test_bad_placeholders_and_versions_are_refused
    error = assert_raises(Convergent::Error) { Convergent::Release.expand('/x/%{bogus}', version: nil, machine: 'x86_64') }
    assert_includes error.message, '%{bogus}'
    error = assert_raises(Convergent::Error) { Convergent::Release.expand('/x/%{version}', version: nil, machine: 'x86_64') }
    assert_includes error.message, 'set the resource\'s version'
    assert_raises(Convergent::Error) { Convergent::Release.expand('/x', version: '1.0/../..', machine: 'x86_64') }
  end

  def test_the_format_comes_from_the_file_name
    assert_equal 'tarball', Convergent::Release.format_of('file:///x/convergent-0.1.0-x.tar.gz')
    assert_equal 'deb', Convergent::Release.format_of('https://x/convergent_0.1.0_amd64.deb')
    assert_equal 'binary', Convergent::Release.format_of('/usr/local/src/convergent')
  end

  def test_sha256_by_machine_or_debian_architecture
    a = 'a' * 64
    b = 'b' * 64
    assert_equal a, Convergent::Release.sha256_for(a, 'aarch64')
    assert_equal b, Convergent::Release.sha256_for({ 'x86_64' => a, 'aarch64' => b }, 'aarch64')
    assert_equal a, Convergent::Release.sha256_for({ 'amd64' => a }, 'x86_64')
    error = assert_raises(Convergent::Error) { Convergent::Release.sha256_for({ 'x86_64' => a }, 'aarch64') }
    assert_includes error.message, 'aarch64'
  end

  # The same share the binary computes (src/commands/watch.rs pins it too).
  def test_the_node_splay_share_matches_the_binary
    assert_equal 0.9813673433868471, Convergent::Release.splay_share('web', 'web-01')
    assert_equal 0.8881301897998504, Convergent::Release.splay_share('web', 'web-02')
  end

  def test_unpack_puts_the_top_folder_in_place_whole
    Dir.mktmpdir do |dir|
      src = File.join(dir, 'src', 'convergent-1.0-x')
      FileUtils.mkdir_p(src)
      FileUtils.cp(ConvergentTest::BINARY, File.join(src, 'convergent'))
      tarball = File.join(dir, 'r.tar.gz')
      system('tar', '-czf', tarball, '-C', File.join(dir, 'src'), 'convergent-1.0-x', exception: true)
      target = File.join(dir, 'opt', '1.0-x')
      FileUtils.mkdir_p(File.dirname(target))
      Convergent::Release.unpack(tarball, target, top: 'convergent-1.0-x')
      assert File.executable?(File.join(target, 'convergent'))
      assert_equal Digest::SHA256.file(tarball).hexdigest, File.read(File.join(target, '.tarball-sha256')).strip
      refute File.exist?("#{target}.new")
      error = assert_raises(Convergent::Error) { Convergent::Release.unpack(tarball, target, top: 'convergent-2.0-x') }
      assert_includes error.message, 'tar'
      assert File.executable?(File.join(target, 'convergent')), 'a failed unpack leaves the installed folder alone'
    end
  end
end
