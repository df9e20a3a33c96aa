# frozen_string_literal: true

require 'spec_helper'

# What only the etcd store promises, on real etcd servers: clear errors for wrong
# credentials, calls bounded by the timeout while etcd is down and working again
# once it is back, one connection for many calls, and Ruby threads running while a
# call waits.
RSpec.describe LibKV::Etcd, if: LibKVTest.backends.any? { |b| b.provider == 'etcd' } do
  etcd = LibKVTest::Etcd

  def monotonic
    Process.clock_gettime(Process::CLOCK_MONOTONIC)
  end

  describe 'credentials' do
    include LibKVTest::Helpers

    it 'without ca_file, verifies the server against the system CAs (here: SSL_CERT_FILE)' do
      url = etcd.server(:tls).url('/system-roots')
      out, err, status = with_system_roots(url, etcd.certs[:ca])
      expect(status).to be_success, err
      expect(out).to eq('v')
      _, err, status = with_system_roots(url, etcd.certs[:other_ca])
      expect(status).not_to be_success
      expect(err).to include('LibKV::ConnectionError').and match(/certificate/i)
    end

    it 'with a CA that did not sign the server certificate, fails naming the certificate problem' do
      server = etcd.server(:tls)
      store = LibKV.open(server.url('/x'), { 'ca_file' => etcd.certs[:other_ca] }, timeout: 2)
      expect { store.get('/k') }.to raise_error(LibKV::ConnectionError) { |e|
        expect(e.message).to include(server.url('/x')).and match(/certificate/i).and include('TLS settings')
      }
    end

    it 'with the wrong password, fails with LibKV::AuthError and never shows the password' do
      server = etcd.server(:auth)
      store = LibKV.open(server.url('/x'), { 'username' => 'root', 'password' => 'wrong-s3cret' }, timeout: 2)
      expect { store.get('/k') }.to raise_error(LibKV::AuthError) { |e|
        expect(e.message).to include('authentication failed').and include('check the username and password')
        expect(e.message).not_to include('wrong-s3cret')
        expect(e.message).not_to include(etcd::PASSWORD)
      }
      expect(store.info.to_s).not_to include('wrong-s3cret') rescue LibKV::AuthError
    end

    it 'for a user without a role on the keys, fails with LibKV::AuthError saying to grant one' do
      server = etcd.server(:auth)
      etcd.send(:etcdctl, server, '--user', "root:#{etcd::PASSWORD}", 'user', 'add', 'limited',
                '--new-user-password=limited-s3cret')
      store = LibKV.open(server.url('/granted'), { 'username' => 'limited', 'password' => 'limited-s3cret' }, timeout: 2)
      expect { store.put('/k', 'v') }.to raise_error(LibKV::AuthError) { |e|
        expect(e.message).to include('permission denied')
          .and include('etcdctl role grant-permission ROLE readwrite --prefix=true /granted/')
        expect(e.message).not_to include('limited-s3cret')
      }
    end

    it 'with a username and password on an etcd without authentication, says to drop them' do
      store = LibKV.open(etcd.server(:plain).url('/x'), { 'username' => 'u', 'password' => 'pw-s3cret' }, timeout: 2)
      expect { store.get('/k') }.to raise_error(LibKV::AuthError) { |e|
        expect(e.message).to include('authentication is not enabled')
          .and include('drop username and password from auth')
        expect(e.message).not_to include('pw-s3cret')
      }
    end

    it 'without credentials on an etcd with auth enabled, fails with a clear error' do
      store = LibKV.open(etcd.server(:auth).url('/x'), {}, timeout: 2)
      expect { store.put('/k', 'v') }.to raise_error(LibKV::AuthError, /needs a username and password/)
    end

    it 'without a client certificate on an etcd that requires one, fails naming the TLS settings' do
      store = LibKV.open(etcd.server(:mtls).url('/x'), { 'ca_file' => etcd.certs[:ca] }, timeout: 2)
      expect { store.get('/k') }.to raise_error(LibKV::ConnectionError, /TLS settings/)
    end

    it 'never shows the password or key file contents in info or errors' do
      auth = etcd.auth_for(:auth)
      info = LibKV.open(etcd.server(:auth).url('/x'), auth).info
      expect(info.to_s).not_to include(etcd::PASSWORD)
      expect(info).to include('provider' => 'etcd', 'version' => start_with('3.'))
      key_pem = File.read(etcd.certs[:client_key])
      mtls = LibKV.open(etcd.server(:mtls).url('/x'), etcd.auth_for(:mtls))
      expect(mtls.info.to_s).not_to include(key_pem)
      expect(mtls.inspect).not_to include(key_pem)
    end
  end

  describe 'while etcd is down' do
    timeout = 1.0
    calls = {
      get: ->(s) { s.get('/k') },
      put: ->(s) { s.put('/k', 'v2') },
      delete: ->(s) { s.delete('/other') },
      exists: ->(s) { s.exists('/k') },
      list: ->(s) { s.list('/') },
      deletetree: ->(s) { s.deletetree('/tree') },
      atomic_create: ->(s) { s.atomic_create('/new', 1) },
      atomic_get: ->(s) { s.atomic_get('/k') },
      atomic_put: ->(s) { s.atomic_put('/k', 1, 1) },
      atomic_delete: ->(s) { s.atomic_delete('/k', 1) },
      atomic_list: ->(s) { s.atomic_list('/') },
      info: ->(s) { s.info }
    }

    it "fails every call within the timeout + 1 s, and the same store works once etcd is back" do
      server = etcd.private_server(:plain)
      store = LibKV.open(server.url('/outage'), {}, timeout: timeout)
      store.put('/k', 'v')
      etcd.stop(server)
      calls.each do |op, call|
        started = monotonic
        expect { call.call(store) }.to raise_error(LibKV::ConnectionError) { |e|
          expect(e.message).to include(server.url('/outage'))
        }
        expect(monotonic - started).to be < timeout + 1, "#{op} took #{monotonic - started}s"
      end
      etcd.restart(server)
      expect(store.get('/k')).to eq('v')
      expect(store.put('/k', 'v3')).to be(true)
      expect(store.atomic_get('/k')['value']).to eq('v3')
    end
  end

  describe 'connections' do
    # This process's established TCP connections to +port+, by local port.
    def connections_to(port)
      inodes = Dir['/proc/self/fd/*'].map { |fd| File.readlink(fd)[/\Asocket:\[(\d+)\]\z/, 1] rescue nil }.compact
      File.readlines('/proc/net/tcp').drop(1).map(&:split).select { |row|
        row[3] == '01' && row[2].split(':')[1].to_i(16) == port && inodes.include?(row[9])
      }.map { |row| row[1].split(':')[1].to_i(16) }
    end

    it 'makes 1,000 calls over one TCP connection, shared by every store object on that etcd' do
      server = etcd.private_server(:plain)
      seen = []
      1000.times do |i|
        store = LibKV.open(server.url("/conn-#{i % 3}"))
        store.put("/k#{i % 10}", i)
        seen |= connections_to(server.port) if (i % 100).zero?
      end
      expect(connections_to(server.port).size).to eq(1)
      expect(seen.size).to eq(1), "local ports seen: #{seen.inspect}"
    end
  end

  describe 'the GVL' do
    it 'is released while a call waits on etcd, so other Ruby threads run' do
      silent = TCPServer.new('127.0.0.1', 0)
      store = LibKV.open("etcd://127.0.0.1:#{silent.addr[1]}/x", {}, timeout: 1)
      ticks = 0
      ticker = Thread.new do
        loop do
          ticks += 1
          sleep 0.001
        end
      end
      expect { store.get('/k') }.to raise_error(LibKV::TimeoutError)
      ticker.kill
      # About 1,000 ticks fit in the second the call waits; with the GVL held, none.
      expect(ticks).to be > 100
    ensure
      silent&.close
    end
  end
end
