# frozen_string_literal: true

#
# Cookbook:: convergent
# Library:: store_url
#
# Store URLs as the cookbook hands them to the binary: never with
# credentials in them (a command line shows in `ps`), and with a token file
# passed the way each store's client reads it.

require_relative 'error'

module Convergent
  # Checks store URLs and applies a token file to them.
  module StoreUrl
    SCHEMES = %w(file: etcd:// etcd+https:// consul:// consul+https:// zk://).freeze
    # Characters that would break the URL's query, which the binary does not decode.
    UNSAFE_PATH = /[?&#=\s]/.freeze

    module_function

    # Raises unless `url` is a store URL without credentials. The message
    # never repeats the URL: it may hold a password.
    def check!(url)
      return if url.nil?
      unless SCHEMES.any? { |scheme| url.start_with?(scheme) }
        raise Error, "store URL #{url.inspect} is not one of #{SCHEMES.join(' ')}"
      end
      # file:PATH has no authority; an @ in a path is no credential.
      authority = url[%r{\A[a-z+]+://([^/?#]*)}, 1]
      return unless authority&.include?('@')
      raise Error, 'the store URL carries credentials (user@ or user:password@); ' \
                   'pass them through the environment or a token file instead'
    end

    # The URL and extra environment that make the binary read the store's
    # secret from `token_file`: etcd takes it as the URL option
    # `password_file` (the user comes from ETCDCTL_USER); Consul reads
    # CONSUL_HTTP_TOKEN_FILE.
    #
    # @return [Array(String, Hash)] the URL, and variables to set
    def with_token_file(url, token_file)
      check!(url)
      return [url, {}] if token_file.nil?
      if token_file.match?(UNSAFE_PATH) || !token_file.start_with?('/')
        raise Error, "token file #{token_file.inspect} must be an absolute path without spaces, ?, &, # or ="
      end
      case url
      when %r{\Aetcd(\+https)?://}
        if url.include?('password_file=')
          raise Error, 'the store URL already names a password_file; set token_file or the URL option, not both'
        end
        ["#{url}#{url.include?('?') ? '&' : '?'}password_file=#{token_file}", {}]
      when %r{\Aconsul(\+https)?://}
        [url, { 'CONSUL_HTTP_TOKEN_FILE' => token_file }]
      else
        raise Error, "a token file is for etcd and Consul stores, not #{url.nil? ? 'the default store' : url.split(':').first}"
      end
    end
  end
end
