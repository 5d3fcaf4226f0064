# frozen_string_literal: true

#
# Cookbook:: convergent
# Library:: installation_source
#
# Where `convergent_installation` takes the binary from: a local path, or a
# URL pinned by its sha256 (a download is only trusted through its digest).

require 'digest'
require_relative 'error'

module Convergent
  # The checked source of a binary.
  module InstallationSource
    SHA256 = /\A\h{64}\z/.freeze

    module_function

    # The URL `remote_file` fetches from: http(s) URLs as they are (sha256
    # required), local paths as file:// URLs (sha256 checked when given).
    def url(source, sha256)
      raise Error, "sha256 #{sha256.inspect} is not 64 hex digits" if sha256 && !sha256.match?(SHA256)
      case source
      when %r{\Ahttps?://}
        raise Error, "installing from #{source} needs its sha256: a download is trusted only through its digest" unless sha256
        source
      when %r{\Afile://(/.*)\z}
        source
      when %r{\A/}
        "file://#{source}"
      else
        raise Error, "source #{source.inspect} must be an absolute path or an http(s) URL"
      end
    end

    # The sha256 of a local file, hex.
    def sha256_of(path)
      Digest::SHA256.file(path).hexdigest
    end
  end
end
