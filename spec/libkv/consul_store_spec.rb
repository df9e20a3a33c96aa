# frozen_string_literal: true

require 'spec_helper'

# What only the Consul store promises, on the Consul test double
# (crates/consul-double): clear errors for a wrong token or CA, noverify accepting
# any server certificate, one connection for many calls, and Ruby threads running
# while a call waits. (The shared specs also run against a real Consul when
# LIBKV_TEST_CONSUL_URL names one; these need servers they control.)
RSpec.describe LibKV::Consul,
               if: LibKVTest.backends.any? { |b| b.provider == 'consul' } && !LibKVTest::Consul.real_url do
  consul = LibKVTest::Consul
  certs = LibKVTest::Certs

  describe 'credentials' do
    include LibKVTest::Helpers

    it 'without ca_file, verifies the server against the system CAs (here: SSL_CERT_FILE)' do
      url = consul.server(:tls).url('/system-roots')
      out, err, status = with_system_roots(url, certs.files[:ca])
      expect(status).to be_success, err
      expect(out).to eq('v')
      _, err, status = with_system_roots(url, certs.files[:other_ca])
      expect(status).not_to be_success
      expect(err).to include('LibKV::ConnectionError').and match(/certificate/i)
    end

    it 'with a wrong or missing token, fails with LibKV::AuthError and never shows the token' do
      server = consul.server(:token)
      [{ 'token' => 'wr0ng-t0ken' }, {}].each do |auth|
        store = LibKV.open(server.url('/x'), auth, timeout: 2)
        expect { store.put('/k', 'v') }.to raise_error(LibKV::AuthError) { |e|
          expect(e.message).to include(server.url('/x')).and include('check the token')
          expect(e.message).not_to include('wr0ng-t0ken')
          expect(e.message).not_to include(consul::TOKEN)
        }
      end
      store = LibKV.open(server.url('/x'), { 'token' => consul::TOKEN })
      expect(store.put('/k', 'v')).to be(true)
      expect(store.info.to_s).not_to include(consul::TOKEN)
      expect(store.inspect).not_to include(consul::TOKEN)
    end

    it 'with a CA that did not sign the server certificate, fails naming the certificate problem' do
      server = consul.server(:tls)
      store = LibKV.open(server.url('/x'), { 'ca_file' => certs.files[:other_ca] }, timeout: 2)
      expect { store.get('/k') }.to raise_error(LibKV::ConnectionError) { |e|
        expect(e.message).to match(/certificate/i).and include('TLS settings')
      }
    end

    it 'with consul+ssl+noverify://, accepts a server certificate no known CA signed' do
      server = consul.server(:tls)
      store = LibKV.open("consul+ssl+noverify://127.0.0.1:#{server.port}/noverify", {}, timeout: 2)
      expect(store.put('/k', 'v')).to be(true)
      expect(store.get('/k')).to eq('v')
      verifying = LibKV.open("consul+ssl://127.0.0.1:#{server.port}/noverify", {}, timeout: 2)
      expect { verifying.get('/k') }.to raise_error(LibKV::ConnectionError, /certificate/i)
    end

    it 'without a client certificate on a server that requires one, fails naming the TLS settings' do
      store = LibKV.open(consul.server(:mtls).url('/x'), { 'ca_file' => certs.files[:ca] }, timeout: 2)
      expect { store.get('/k') }.to raise_error(LibKV::ConnectionError, /TLS settings/)
    end

    it 'names an unreadable TLS file without printing what is in the key file' do
      store = LibKV.open(consul.server(:mtls).url('/x'),
                         { 'ca_file' => certs.files[:ca], 'cert_file' => certs.files[:client],
                           'key_file' => '/nonexistent/key.pem' })
      expect { store.get('/k') }.to raise_error(LibKV::InvalidArgumentError, %r{cannot read key_file /nonexistent/key\.pem})
    end
  end

  describe 'connections' do
    def connections_to(port)
      inodes = Dir['/proc/self/fd/*'].map { |fd| File.readlink(fd)[/\Asocket:\[(\d+)\]\z/, 1] rescue nil }.compact
      File.readlines('/proc/net/tcp').drop(1).map(&:split).select { |row|
        row[3] == '01' && row[2].split(':')[1].to_i(16) == port && inodes.include?(row[9])
      }.map { |row| row[1].split(':')[1].to_i(16) }
    end

    # Sequential calls reuse the pool's kept-alive connection. HTTP/1.1 pools
    # (hyper's) put a finished connection back from a background task, so a call
    # that comes before that task has run may open one more, which the pool keeps
    # too; calls from several threads at once use more. This server serves this
    # example only.
    it 'reuses kept-alive connections over 1,000 calls, shared by every store object on that server' do
      server = consul.private_server(:plain)
      seen = []
      1000.times do |i|
        LibKV.open(server.url("/conn-#{i % 3}")).put("/k#{i % 10}", i)
        seen |= connections_to(server.port) if (i % 50).zero?
      end
      expect(connections_to(server.port).size).to be_between(1, 2)
      expect(seen.size).to be_between(1, 2), "local ports seen: #{seen.inspect}"
    end
  end

  describe 'the GVL' do
    it 'is released while a call waits on Consul, so other Ruby threads run' do
      silent = TCPServer.new('127.0.0.1', 0)
      store = LibKV.open("consul://127.0.0.1:#{silent.addr[1]}/x", {}, timeout: 1)
      ticks = 0
      ticker = Thread.new do
        loop do
          ticks += 1
          sleep 0.001
        end
      end
      expect { store.get('/k') }.to raise_error(LibKV::TimeoutError)
      ticker.kill
      expect(ticks).to be > 100
    ensure
      silent&.close
    end
  end
end
