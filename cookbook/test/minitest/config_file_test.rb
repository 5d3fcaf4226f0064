# frozen_string_literal: true

require_relative 'test_helper'

# What convergent_config writes, checked against the binary that reads it.
class ConfigFileTest < Minitest::Test
  include ConvergentTest::Sandbox

  CONFIG_RS = File.expand_path('../src/config.rs', COOKBOOK)

  Declared = Struct.new(*Convergent::ConfigFile::PROPERTIES.keys, keyword_init: true)

  def test_the_fields_are_exactly_those_the_binary_accepts
    source = File.read(CONFIG_RS)
    struct = source[/struct ConfigFile \{(.*?)\n\}/m, 1]
    fields = struct.scan(/^\s*(\w+): Option</).flatten
    assert_equal fields, Convergent::ConfigFile::FIELDS, "src/config.rs has #{fields.inspect}"
  end

  def test_a_rendered_file_with_every_field_is_read_by_the_binary
    view('web-waiting')
    declared = Declared.new(
      store: "file:#{path('view.yml')}", prefix: 'convergent', output_format: 'json', cache_dir: path('cache'),
      max_stale: '12h', on_unreachable: 'cache', timeout: '3s', cluster: 'web', node_name: 'web-03',
      member_ttl: '1h30m'
    )
    File.write(@config, Convergent::ConfigFile.render(Convergent::ConfigFile.fields(declared)))
    # No flags at all: store, cluster and node come from the file.
    document = JSON.parse(convergent!('attributes'))
    assert_equal 'web-03', document['convergent']['node']
    assert_equal 'waiting', document['convergent']['state']
    assert File.exist?(path('cache/web/web-03.json')), 'cache_dir came from the file'
  end

  def test_values_stay_strings_and_unset_fields_are_left_out
    fields = Convergent::ConfigFile.fields(Declared.new(cluster: 'off', timeout: '5s'))
    text = Convergent::ConfigFile.render(fields)
    assert_equal "cluster: \"off\"\n", text.lines.grep(/\Acluster/).first
    refute_match(/^store:/, text)
    assert_equal({ 'timeout' => '5s', 'cluster' => 'off' }, Convergent::ConfigFile.parse(text))
  end

  def test_unknown_fields_are_refused
    assert_raises(ArgumentError) { Convergent::ConfigFile.render('stroe' => 'x') }
  end

  def test_changes_say_what_is_set_and_removed
    assert_equal ['create with store'], Convergent::ConfigFile.changes(nil, 'store' => 'file:/a.yml')
    assert_equal [], Convergent::ConfigFile.changes({ 'store' => 'file:/a.yml' }, 'store' => 'file:/a.yml')
    assert_equal ['set store to "file:/b.yml" (was "file:/a.yml")', 'remove timeout (was "5s")', 'set cluster to "web"'],
                 Convergent::ConfigFile.changes({ 'store' => 'file:/a.yml', 'timeout' => '5s' },
                                                'store' => 'file:/b.yml', 'cluster' => 'web')
  end

  def test_a_token_file_goes_into_the_etcd_url_and_is_taken_off_when_read_back
    declared = Declared.new(store: 'etcd://10.0.0.1:2379?consistency=serializable')
    fields = Convergent::ConfigFile.fields(declared, token_file: '/etc/convergent/etcd.password')
    assert_equal 'etcd://10.0.0.1:2379?consistency=serializable&password_file=/etc/convergent/etcd.password',
                 fields['store']
    text = Convergent::ConfigFile.render(fields)
    assert_equal({ 'store' => declared.store },
                 Convergent::ConfigFile.parse(text, token_file: '/etc/convergent/etcd.password'))
  end

  def test_write_replaces_the_file_whole_with_its_mode
    file = path('config.yml')
    File.write(file, 'old')
    File.chmod(0o600, file)
    Convergent::ConfigFile.write(file, "store: \"file:/x.yml\"\n")
    assert_equal "store: \"file:/x.yml\"\n", File.read(file)
    assert_equal 0o644, File.stat(file).mode & 0o777
    assert_equal ['config.yml'], Dir.children(@dir), 'no temporary file is left'
    assert_raises(Errno::ENOENT) { Convergent::ConfigFile.write(path('missing/config.yml'), 'x') }
  end
end
