# frozen_string_literal: true

require 'socket'
require_relative 'certs'

module LibKVTest
  # Consul for the specs. No Consul package exists for Debian 12, so by default the
  # specs run against crates/consul-double, a Consul-KV-compatible test double
  # (built by `rake spec`), started on first use in these setups:
  #
  #   :plain     consul://
  #   :tls       consul+ssl://, verifying the server against the test CA (ca_file)
  #   :noverify  consul+ssl+noverify://, no CA given
  #   :mtls      consul+ssl:// with a client certificate the server requires
  #   :token     consul:// with ACLs: the token must be sent
  #
  # With LIBKV_TEST_CONSUL_URL set (e.g. consul://127.0.0.1:8500/libkv-spec), the
  # specs run against that real Consul instead, with the token in
  # LIBKV_TEST_CONSUL_TOKEN and the CA in LIBKV_TEST_CONSUL_CA_FILE if it needs them.
  module Consul
    TOKEN = 'consul-spec-t0ken'

    Server = Struct.new(:kind, :scheme, :port, :io, :auth) do
      def url(prefix = '')
        "#{scheme}://127.0.0.1:#{port}#{prefix}"
      end
    end

    class << self
      def real_url
        ENV['LIBKV_TEST_CONSUL_URL'].to_s.empty? ? nil : ENV['LIBKV_TEST_CONSUL_URL']
      end

      def real_auth
        { 'token' => ENV['LIBKV_TEST_CONSUL_TOKEN'], 'ca_file' => ENV['LIBKV_TEST_CONSUL_CA_FILE'] }
          .reject { |_, v| v.to_s.empty? }
      end

      def server(kind)
        @servers ||= {}
        @servers[kind] ||= start(kind)
      end

      # A server of its own, for an example that must not share one.
      def private_server(kind)
        @private = (@private || 0) + 1
        (@servers ||= {})[:"private_#{@private}"] = start(kind)
      end

      # A prefix no other example uses.
      def unique_prefix
        @counter = (@counter || 0) + 1
        "/spec-#{Process.pid}-#{@counter}"
      end

      def auth_for(kind)
        certs = Certs.files
        case kind
        when :plain, :noverify then {}
        when :tls then { 'ca_file' => certs[:ca] }
        when :mtls then { 'ca_file' => certs[:ca], 'cert_file' => certs[:client], 'key_file' => certs[:client_key] }
        when :token then { 'token' => TOKEN }
        end
      end

      def scheme_for(kind)
        { plain: 'consul', tls: 'consul+ssl', noverify: 'consul+ssl+noverify', mtls: 'consul+ssl',
          token: 'consul' }.fetch(kind)
      end

      # The double's binary, built by `cargo build -p consul-double`, or the one
      # LIBKV_CONSUL_DOUBLE names (the benchmarks use a release build).
      def binary
        return ENV['LIBKV_CONSUL_DOUBLE'] if ENV['LIBKV_CONSUL_DOUBLE']

        target = ENV['CARGO_TARGET_DIR'] || File.expand_path('../../target', __dir__)
        path = File.join(target, 'debug', 'consul-double')
        return path if File.executable?(path)

        raise "#{path} is missing: build it with `cargo build -p consul-double` (rake spec does)"
      end

      def stop(server)
        return unless server.io

        server.io.close # the double exits when its stdin closes
        server.io = nil
      end

      private

      def start(kind)
        certs = Certs.files
        # Sessions as short as 1 s (a Consul agent's session_ttl_min: "1s"), so
        # that the examples of ttl keys and locks wait seconds, not tens of them.
        args = [binary, '--port', '0', '--min-session-ttl', '1']
        args += ['--token', TOKEN] if kind == :token
        args += ['--tls-cert', certs[:server], '--tls-key', certs[:server_key]] if %i[tls noverify mtls].include?(kind)
        args += ['--client-ca', certs[:ca]] if kind == :mtls
        io = IO.popen(args, 'r+')
        line = io.gets.to_s
        port = line[/\Alistening on 127\.0\.0\.1:(\d+)/, 1] or raise "consul-double did not start: #{line.inspect}"
        server = Server.new(kind, scheme_for(kind), port.to_i, io, auth_for(kind))
        at_exit { stop(server) }
        server
      end
    end
  end
end
