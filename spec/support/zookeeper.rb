# frozen_string_literal: true

require 'tmpdir'
require 'fileutils'

require_relative 'etcd'

module LibKVTest
  # A real ZooKeeper (Debian's zookeeper, 3.8) for the specs, on 127.0.0.1 with a
  # free port and a temp data dir, started on first use and stopped when the specs
  # end. TTL nodes are on (zookeeper.extendedTypesEnabled), and empty container
  # nodes are removed every second. Digest credentials need nothing on the server:
  # the store with auth creates its nodes readable by that user only.
  module ZooKeeper
    USERNAME = 'spec'
    PASSWORD = 'zk-spec-s3cret'

    Server = Struct.new(:port, :dir, :pid) do
      def url(prefix = '')
        "zookeeper://127.0.0.1:#{port}#{prefix}"
      end
    end

    class << self
      def server
        @server ||= start
      end

      # A server of its own for a run that stops it; stopped at exit too.
      def private_server
        start
      end

      # The auth settings of a setup: none, or digest credentials.
      def auth_for(kind)
        kind == :auth ? { 'username' => USERNAME, 'password' => PASSWORD } : {}
      end

      # Starts a stopped server again, on the same port and data.
      def restart(server)
        run(server)
        wait_ready(server)
      end

      def stop(server)
        return unless server.pid

        Process.kill('TERM', server.pid)
        Process.wait(server.pid)
        server.pid = nil
      rescue Errno::ESRCH, Errno::ECHILD
        server.pid = nil
      end

      private

      def start
        dir = Dir.mktmpdir('libkv-spec-zookeeper')
        server = Server.new(Etcd.free_port, dir, nil)
        owner = Process.pid
        at_exit do
          # Not in a forked child that exits normally: the server is its parent's.
          if Process.pid == owner
            stop(server)
            FileUtils.rm_rf(dir)
          end
        end
        File.write(File.join(dir, 'zoo.cfg'), <<~CFG)
          tickTime=500
          dataDir=#{dir}/data
          clientPort=#{server.port}
          clientPortAddress=127.0.0.1
          admin.enableServer=false
          maxClientCnxns=0
        CFG
        run(server)
        wait_ready(server)
        server
      end

      def run(server)
        server.pid = Process.spawn('java', '-Dzookeeper.extendedTypesEnabled=true',
                                   '-Dznode.container.checkIntervalMs=1000', '-Xmx256m',
                                   '-cp', classpath, 'org.apache.zookeeper.server.quorum.QuorumPeerMain',
                                   File.join(server.dir, 'zoo.cfg'),
                                   out: File::NULL, err: [File.join(server.dir, 'zookeeper.log'), 'a'])
      end

      # Debian's ZooKeeper jar (its manifest names the jars it needs) and its
      # logging configuration.
      def classpath
        jar = '/usr/share/java/zookeeper.jar'
        raise 'ZooKeeper is not installed: apt-get install zookeeper (script/bootstrap does)' unless File.exist?(jar)

        "#{jar}:/etc/zookeeper/conf"
      end

      # Waits until the server answers through libkv itself.
      def wait_ready(server)
        store = LibKV.open(server.url('/spec-ready'), {}, timeout: 1)
        deadline = Process.clock_gettime(Process::CLOCK_MONOTONIC) + 60
        begin
          store.get('/probe')
        rescue LibKV::StoreError
          raise "ZooKeeper did not start: see #{server.dir}/zookeeper.log" if Process.clock_gettime(Process::CLOCK_MONOTONIC) > deadline

          sleep 0.1
          retry
        end
      end
    end
  end
end
