# frozen_string_literal: true

# The stores the specs run against. Each backend gives, for a temp directory, the
# options of a fresh empty store, and (when the store can fail) of a broken one.
# LIBKV_TEST_STORES=mock,file selects some; by default all run.
require_relative 'etcd'
require_relative 'consul'
require_relative 'zookeeper'

module LibKVTest
  # +provider+ is what the store calls itself; +failure+ matches the message of a
  # call on the broken store.
  Backend = Struct.new(:name, :provider, :fresh, :broken, :failure)

  @backends = {}

  class << self
    # @param fresh [Proc] tmp -> { url:, auth:, vardir: } of a new, empty store
    # @param broken [Proc, nil] tmp -> the same for a store whose every call fails
    def register(name, fresh:, provider: name, broken: nil, failure: nil)
      @backends[name] = Backend.new(name, provider, fresh, broken, failure)
    end

    def backends
      names = ENV.fetch('LIBKV_TEST_STORES', '').split(',').map(&:strip).reject(&:empty?)
      return @backends.values if names.empty?

      unknown = names - @backends.keys
      raise "unknown store in LIBKV_TEST_STORES: #{unknown.join(', ')} (known: #{@backends.keys.join(', ')})" unless unknown.empty?

      names.map { |n| @backends.fetch(n) }
    end
  end

  register('mock', fresh: ->(_tmp) { { url: 'mock://', auth: {} } })

  register('file',
           fresh: ->(tmp) { { url: "file://#{tmp}/store", auth: {} } },
           broken: lambda { |tmp|
             File.write(File.join(tmp, 'a-file'), '')
             { url: "file://#{tmp}/a-file/store", auth: {} }
           },
           failure: /cannot use/)

  register('legacy-simp6',
           fresh: ->(tmp) { { url: 'legacy-simp6://', auth: {}, vardir: File.join(tmp, 'vardir') } },
           broken: lambda { |tmp|
             File.write(File.join(tmp, 'vardir'), '')
             { url: 'legacy-simp6://', auth: {}, vardir: File.join(tmp, 'vardir') }
           },
           failure: /cannot use/)

  # etcd, plain, over TLS, with client certificates, and with a password; a broken
  # one is a port nothing listens on, with the same auth settings.
  { 'etcd' => :plain, 'etcd-tls' => :tls, 'etcd-mtls' => :mtls, 'etcd-auth' => :auth }.each do |name, kind|
    register(name,
             provider: 'etcd',
             fresh: lambda { |_tmp|
               server = Etcd.server(kind)
               { url: server.url(Etcd.unique_prefix), auth: server.auth }
             },
             broken: lambda { |_tmp|
               scheme = %i[tls mtls].include?(kind) ? 'etcd+ssl' : 'etcd'
               { url: "#{scheme}://127.0.0.1:#{Etcd.free_port}/spec", auth: Etcd.auth_for(kind) }
             },
             failure: /cannot reach the store/)
  end

  # Consul: a real one when LIBKV_TEST_CONSUL_URL names it, else the test double in
  # each of its setups. A broken one is a port nothing listens on.
  if Consul.real_url
    register('consul',
             fresh: ->(_tmp) { { url: Consul.real_url + Consul.unique_prefix, auth: Consul.real_auth } },
             broken: ->(_tmp) { { url: "consul://127.0.0.1:#{Etcd.free_port}/spec", auth: {} } },
             failure: /cannot reach the store/)
  else
    { 'consul' => :plain, 'consul-tls' => :tls, 'consul-noverify' => :noverify, 'consul-mtls' => :mtls,
      'consul-token' => :token }.each do |name, kind|
      register(name,
               provider: 'consul',
               fresh: lambda { |_tmp|
                 server = Consul.server(kind)
                 { url: server.url(Consul.unique_prefix), auth: server.auth }
               },
               broken: lambda { |_tmp|
                 { url: "#{Consul.scheme_for(kind)}://127.0.0.1:#{Etcd.free_port}/spec", auth: Consul.auth_for(kind) }
               },
               failure: /cannot reach the store/)
    end
  end

  # ZooKeeper, without and with digest credentials; a broken one is a port nothing
  # listens on. Not run until the store is available (libkv refuses zookeeper://
  # without LIBKV_ZOOKEEPER_PREVIEW): LIBKV_ZOOKEEPER_PREVIEW=1 with
  # LIBKV_TEST_STORES=zookeeper,zookeeper-auth runs them.
  zookeeper_setups = ENV['LIBKV_ZOOKEEPER_PREVIEW'] ? { 'zookeeper' => :plain, 'zookeeper-auth' => :auth } : {}
  zookeeper_setups.each do |name, kind|
    register(name,
             provider: 'zookeeper',
             fresh: ->(_tmp) { { url: ZooKeeper.server.url(Etcd.unique_prefix), auth: ZooKeeper.auth_for(kind) } },
             broken: ->(_tmp) { { url: "zookeeper://127.0.0.1:#{Etcd.free_port}/spec", auth: ZooKeeper.auth_for(kind) } },
             failure: /cannot reach the store/)
  end

  # SQLite: a database file in the example's temp directory; a broken one lies
  # below a regular file.
  register('sqlite',
           fresh: ->(tmp) { { url: "sqlite://#{tmp}/store.db", auth: {} } },
           broken: lambda { |tmp|
             File.write(File.join(tmp, 'a-file'), '')
             { url: "sqlite://#{tmp}/a-file/store.db", auth: {} }
           },
           failure: /cannot use/)
end
