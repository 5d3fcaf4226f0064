# frozen_string_literal: true

module ConvergentTest
  # node['convergent'] as attributes/default.rb sets it, pointed at the
  # sandbox's view, cache and attributes folder.
  module Settings
    def settings(**overrides)
      {
        'binary' => ConvergentTest::BINARY,
        'store' => "file:#{path('view.yml')}",
        'config_file' => @config,
        'cache_dir' => path('cache'),
        'timeout' => '5s',
        'command_timeout' => 30,
        'attributes_dir' => path('lib'),
        'environment' => {},
      }.merge(overrides.transform_keys(&:to_s))
    end
  end
end
