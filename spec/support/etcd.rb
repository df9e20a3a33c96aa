# frozen_string_literal: true

require 'socket'
require 'tmpdir'
require 'fileutils'

require_relative 'certs'

module LibKVTest
  # Real etcd servers (Debian's etcd-server) for the specs, on 127.0.0.1 with free
  # ports and temp data dirs, started on first use and stopped when the specs end:
  #
  #   :plain  etcd://
  #   :tls    etcd+ssl://, the client verifies the server against a test CA
  #   :mtls   etcd+ssl:// with --client-cert-auth: the client presents a certificate
  #   :auth   etcd:// with auth enabled: user root, a password
  module Etcd
    PASSWORD = 'etcd-spec-s3cret'

    Server = Struct.new(:kind, :scheme, :port, :peer_port, :dir, :pid, :auth) do
      def url(prefix = '')
        "#{scheme}://127.0.0.1:#{port}#{prefix}"
      end
    end

    class << self
      def server(kind)
        @servers ||= {}
        @servers[kind] ||= start(kind)
      end

      # A server of its own for an example that stops it; stopped at exit too.
      def private_server(kind)
        @private = (@private || 0) + 1
        server = start(kind, "#{kind}-private-#{@private}")
        (@servers ||= {})[:"private_#{@private}"] = server
      end

      # A prefix no other example uses.
      def unique_prefix
        @counter = (@counter || 0) + 1
        "/spec-#{Process.pid}-#{@counter}"
      end

      # The auth settings of a server kind, for LibKV.open and the auth option.
      def auth_for(kind)
        case kind
        when :plain then {}
        when :tls then { 'ca_file' => certs[:ca] }
        when :mtls then { 'ca_file' => certs[:ca], 'cert_file' => certs[:client], 'key_file' => certs[:client_key] }
        when :auth then { 'username' => 'root', 'password' => PASSWORD }
        end
      end

      def certs
        Certs.files
      end

      def stop(server)
        return unless server.pid

        Process.kill('TERM', server.pid)
        Process.wait(server.pid)
        server.pid = nil
      rescue Errno::ESRCH, Errno::ECHILD
        server.pid = nil
      end

      # Starts a stopped server again, on the same ports and data.
      def restart(server)
        run(server)
        wait_ready(server)
      end

      def free_port
        TCPServer.open('127.0.0.1', 0) { |s| s.addr[1] }
      end

      private

      def base_dir
        @base_dir ||= Dir.mktmpdir('libkv-spec-etcd').tap do |dir|
          at_exit do
            (@servers || {}).each_value { |s| stop(s) }
            FileUtils.rm_rf(dir)
          end
        end
      end

      def start(kind, name = kind.to_s)
        scheme = %i[tls mtls].include?(kind) ? 'etcd+ssl' : 'etcd'
        server = Server.new(kind, scheme, free_port, free_port, File.join(base_dir, name), nil, auth_for(kind))
        run(server)
        if kind == :auth
          wait_ready(Server.new(kind, scheme, server.port, nil, nil, nil, {}))
          etcdctl(server, 'user', 'add', 'root', "--new-user-password=#{PASSWORD}")
          etcdctl(server, 'auth', 'enable')
        end
        wait_ready(server)
        server
      end

      def run(server)
        client_scheme = server.scheme == 'etcd+ssl' ? 'https' : 'http'
        client = "#{client_scheme}://127.0.0.1:#{server.port}"
        peer = "http://127.0.0.1:#{server.peer_port}"
        args = ['etcd', '--name', 'spec', '--data-dir', server.dir,
                '--listen-client-urls', client, '--advertise-client-urls', client,
                '--listen-peer-urls', peer, '--initial-advertise-peer-urls', peer,
                '--initial-cluster', "spec=#{peer}", '--log-level', 'error']
        if server.scheme == 'etcd+ssl'
          args += ['--cert-file', certs[:server], '--key-file', certs[:server_key]]
          args += ['--client-cert-auth', '--trusted-ca-file', certs[:ca]] if server.kind == :mtls
        end
        server.pid = Process.spawn(*args, out: File::NULL, err: File.join(base_dir, "#{server.kind}.log"))
      end

      def etcdctl(server, *command)
        ok = system('etcdctl', "--endpoints=http://127.0.0.1:#{server.port}", *command,
                    out: File::NULL, err: [File.join(base_dir, 'etcdctl.log'), 'a'])
        raise "etcdctl #{command.first(2).join(' ')} failed" unless ok
      end

      # Waits until the server answers through libkv itself.
      def wait_ready(server)
        store = LibKV.open(server.url('/spec-ready'), server.auth, timeout: 1)
        deadline = Process.clock_gettime(Process::CLOCK_MONOTONIC) + 30
        begin
          store.get('/probe')
        rescue LibKV::StoreError
          raise "etcd (#{server.kind}) did not start: see #{base_dir}/#{server.kind}.log" if Process.clock_gettime(Process::CLOCK_MONOTONIC) > deadline

          sleep 0.05
          retry
        end
      end
    end
  end
end
