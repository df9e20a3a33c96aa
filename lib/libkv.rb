# frozen_string_literal: true

require "libkv/version"
require "libkv/errors"
# The binding: the MRI extension (ext/libkv) on MRI; on JRuby (puppetserver), the
# C ABI library of the same core through FFI (lib/libkv/ffi.rb). Both give the
# same classes, methods, results and exceptions.
if RUBY_ENGINE == "jruby"
  require "libkv/ffi"
else
  # A prebuilt gem (x86_64-linux) carries one extension per Ruby minor version,
  # in libkv/3.1/, libkv/3.3/...; the source gem and a checkout build one, in libkv/.
  begin
    require "libkv/#{RUBY_VERSION[/\A\d+\.\d+/]}/libkv"
  rescue LoadError => prebuilt
    begin
      require "libkv/libkv"
    rescue LoadError => e
      raise LoadError, "libkv's native extension for Ruby #{RUBY_VERSION} is not installed (#{e.message}; " \
                       "#{prebuilt.message}): on this machine, `gem install libkv` (or, in a checkout, " \
                       "`rake compile`); see libkv's README"
    end
  end
end
require "libkv/store"
require "libkv/lock"
require "libkv/watch"

# libkv: one key/value API over several stores, chosen by URL.
#
#   store = LibKV.open("file:///var/lib/libkv")
#   store.put("/app/port", 8080)   # => true
#   store.get("/app/port")         # => 8080
#
# Every file here stays Ruby 2.6 compatible: puppetserver runs JRuby 9.3.
module LibKV
  # DEFAULT_TIMEOUT and MAX_TIMEOUT (from the binding): the core's, in seconds.

  # The auth settings (the store refuses any other).
  AUTH_SETTINGS = %w[ca_file cert_file key_file username password token].freeze
  private_constant :AUTH_SETTINGS

  # Opens the store +url+ names (see the README for every URL form).
  #
  # @param url [String] mock://[NAME], file:///ROOT, legacy-simp6://,
  #   consul[+ssl[+verify|+noverify]]://HOST:PORT/PREFIX, etcd[+ssl]://HOST:PORT[,...]/PREFIX,
  #   zookeeper://HOST:PORT[,...]/PREFIX, sqlite:///ABSOLUTE/FILE.db
  # @param auth [Hash] credentials and TLS files: ca_file, cert_file, key_file,
  #   username, password, token (String or Symbol keys)
  # @param timeout [Numeric] seconds for connecting and for each request (the file
  #   store: for waiting on its lock)
  # @param vardir [String] Puppet's vardir, for legacy-simp6://
  # @param environment [String] the Puppet environment, for legacy-simp6://
  # @return [LibKV::Store] a LibKV::Mock, LibKV::File, LibKV::LegacySimp6,
  #   LibKV::Consul, LibKV::Etcd, LibKV::ZooKeeper or LibKV::SQLite
  # @raise [LibKV::InvalidArgumentError] a malformed URL or option
  # @raise [LibKV::StoreError] the store cannot be opened
  # @raise [ArgumentError] an unknown keyword
  def self.open(url, auth = {}, timeout: DEFAULT_TIMEOUT, vardir: nil, environment: nil, **unknown)
    raise TypeError, "url must be a String, not #{url.class}" unless url.is_a?(String)
    raise TypeError, "auth must be a Hash, not #{auth.class}" unless auth.is_a?(Hash)

    auth = keywords_as_auth(unknown, auth) unless unknown.empty?
    raise TypeError, "timeout must be a number of seconds, not #{timeout.class}" unless timeout.is_a?(Numeric)

    Store._open(url, auth, timeout.to_f, vardir && vardir.to_s, environment && environment.to_s)
  end

  # Keywords LibKV.open does not take. Ruby 2.6 (puppetserver's JRuby 9.3) takes the
  # Symbol keys of a last Hash argument for keywords, so there
  # LibKV.open(url, { token: "t" }) arrives (in part) as keywords: when every
  # keyword is an auth setting, they belong to the auth. Anything else is a mistake.
  def self.keywords_as_auth(unknown, auth)
    if RUBY_VERSION < '2.7' && unknown.keys.all? { |k| AUTH_SETTINGS.include?(k.to_s) }
      return auth.merge(unknown)
    end

    names = unknown.keys.map(&:inspect).join(', ')
    raise ArgumentError, "unknown keyword#{unknown.size > 1 ? 's' : ''}: #{names}; LibKV.open takes timeout:, " \
                         'vardir: and environment:, and credentials in the auth Hash, its second argument ' \
                         '(LibKV.open(url, { "token" => "..." }))'
  end
  private_class_method :keywords_as_auth

  # LibKV.binary_inside?(value) (from the binding): whether +value+ is, or holds
  # at any depth, a binary (BINARY-encoded) String.

  # The Hash that stands for an absent key in atomic_get and atomic_put.
  def self.empty_value
    { "value" => nil, "sequence" => 0 }
  end
end
