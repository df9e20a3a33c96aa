# frozen_string_literal: true

require 'spec_helper_puppet'

# libkv::newlock, libkv::unlock, libkv::with_lock and the ttl option of the
# writes, on every store. The examples that wait for a ttl to pass run on one
# store setup per provider (the others differ in transport only).
RSpec.describe 'libkv locks and ttl' do
  # The shortest ttl each provider keeps, in seconds.
  shortest_ttl = { 'mock' => 1, 'file' => 1, 'legacy-simp6' => 1, 'etcd' => 2, 'consul' => 1, 'zookeeper' => 1, 'sqlite' => 1 }.freeze
  first_of_provider = LibKVTest.backends.group_by(&:provider).values.map { |bs| bs.first.name }

  def monotonic
    Process.clock_gettime(Process::CLOCK_MONOTONIC)
  end

  # A key as Puppet makes it from a fact: a BINARY-encoded Ruby String.
  def from_fact(text)
    text.dup.force_encoding(Encoding::BINARY)
  end

  LibKVTest.each_backend(self) do |backend|
    let(:ttl) { shortest_ttl.fetch(backend.provider) }

    it 'newlock returns a held lock whose key holds its owner, and unlock releases it' do
      lock = libkv('newlock', from_fact('/locks/web01.example.com'), opts('ttl' => 60, 'timeout' => 0))
      expect(lock.keys).to eq(%w[key owner fence ttl])
      expect(lock).to include('key' => '/locks/web01.example.com', 'ttl' => 60)
      expect(lock['fence']).to be_a(Integer).and be > 0
      expect(libkv('get', '/locks/web01.example.com', opts)).to eq(lock['owner'])
      expect { libkv('newlock', '/locks/web01.example.com', opts('timeout' => 0.2)) }
        .to raise_error(Puppet::Error, %r{libkv::newlock: newlock /locks/web01.example.com on .*held by another})
      expect(libkv('unlock', lock, opts)).to be(true)
      expect(libkv('unlock', lock, opts)).to be(false)
      again = libkv('newlock', '/locks/web01.example.com', opts('timeout' => 0))
      expect(again['fence']).to be > lock['fence']
      expect(libkv('unlock', again, opts)).to be(true)
    end

    it 'newlock with softfail returns undef when another holds the lock, and pop_error says why' do
      held = libkv('newlock', '/locks/one', opts('timeout' => 0))
      libkv('pop_error')
      expect(libkv('newlock', '/locks/one', opts('timeout' => 0, 'softfail' => true))).to be_nil
      expect(libkv('pop_error')).to match(%r{libkv::newlock: newlock /locks/one .*held by another})
      libkv('unlock', held, opts)
    end

    it 'with_lock runs the block holding the lock, returns its value and releases the lock' do
      seen = nil
      result = libkv('with_lock', '/locks/block', opts('ttl' => 30)) do |lock|
        seen = lock
        expect(libkv('get', '/locks/block', opts)).to eq(lock['owner'])
        'done'
      end
      expect(result).to eq('done')
      expect(seen).to include('key' => '/locks/block', 'ttl' => 30)
      expect(libkv('exists', '/locks/block', opts)).to be(false)
      expect(libkv('with_lock', '/locks/block', opts) { 42 }).to eq(42)
    end

    it 'with_lock releases the lock when the block fails, and the failure propagates' do
      expect { libkv('with_lock', '/locks/failing', opts) { raise Puppet::Error, 'the block failed' } }
        .to raise_error(Puppet::Error, 'the block failed')
      expect(libkv('exists', '/locks/failing', opts)).to be(false)
    end

    it 'with_lock does not run the block when the lock is not taken: it fails, or with softfail returns undef' do
      held = libkv('newlock', '/locks/busy', opts('timeout' => 0))
      ran = false
      expect { libkv('with_lock', '/locks/busy', opts('timeout' => 0.1)) { ran = true } }
        .to raise_error(Puppet::Error, /held by another/)
      libkv('pop_error')
      expect(libkv('with_lock', '/locks/busy', opts('timeout' => 0, 'softfail' => true)) { ran = true }).to be_nil
      expect(ran).to be(false)
      expect(libkv('pop_error')).to match(/libkv::with_lock: .*held by another/)
      libkv('unlock', held, opts)
    end

    it 'takes ttl on put, atomic_create and atomic_put, and refuses it elsewhere and out of bounds' do
      expect(libkv('put', from_fact('/hosts/web01'), from_fact('10.0.0.1'), opts('ttl' => 60))).to be(true)
      expect(libkv('get', '/hosts/web01', opts)).to eq('10.0.0.1')
      expect(libkv('get', '/hosts/web01', opts).encoding).to eq(Encoding::UTF_8)
      expect(libkv('atomic_create', '/hosts/web02', 'x', opts('ttl' => 60))).to be(true)
      expect(libkv('atomic_create', '/hosts/web02', 'y', opts('ttl' => 60))).to be(false)
      current = libkv('atomic_get', '/hosts/web02', opts)
      expect(libkv('atomic_put', '/hosts/web02', 'z', current, opts('ttl' => 60))).to be(true)
      expect(libkv('get', '/hosts/web02', opts)).to eq('z')
      expect { libkv('get', '/hosts/web01', opts('ttl' => 60)) }.to raise_error(ArgumentError, /ttl/)
      expect { libkv('put', '/k', 'v', opts('ttl' => 0)) }.to raise_error(ArgumentError, /ttl/)
      expect { libkv('put', '/k', 'v', opts('ttl' => '60')) }.to raise_error(ArgumentError, /ttl/)
      expect { libkv('put', '/k', 'v', opts('ttl' => 1_000_000_000)) }
        .to raise_error(ArgumentError, /ttl must be a whole number of seconds from \d+ to \d+ on the #{backend.provider} store/)
      expect(libkv('exists', '/k', opts)).to be(false)
      expect(libkv('put', { 'key' => '/named', 'value' => 1, 'ttl' => 60 }.merge(opts))).to be(true)
    end

    if first_of_provider.include?(backend.name)
      it 'with_lock says so when the lock was lost while the block ran' do
        message = nil
        expect do
          libkv('with_lock', '/locks/lost', opts('ttl' => ttl)) do |lock|
            # Another takes the lock meanwhile: the renewal finds it gone.
            libkv('delete', lock['key'], opts)
            sleep(ttl / 3.0 + 0.5)
            'ran'
          end
        end.to raise_error(Puppet::Error) { |e| message = e.message }
        expect(message).to match(%r{libkv::with_lock: the lock /locks/lost on .* was lost: .*may have overlapped})
        libkv('pop_error')
        result = libkv('with_lock', '/locks/lost', opts('ttl' => ttl, 'softfail' => true)) do |lock|
          libkv('delete', lock['key'], opts)
          sleep(ttl / 3.0 + 0.5)
          'ran'
        end
        expect(result).to be_nil
        expect(libkv('pop_error')).to match(/was lost/)
      end

      it 'forgets a key once its ttl has passed, on every read, unless it was written again' do
        libkv('put', '/reg/gone', 'a', opts('ttl' => ttl))
        libkv('put', '/reg/kept', 'b', opts('ttl' => ttl))
        libkv('put', '/reg/plain', 'c', opts)
        started = monotonic
        sleep(ttl - 0.25)
        libkv('put', '/reg/kept', 'b2', opts('ttl' => ttl))
        expect(libkv('get', '/reg/gone', opts)).to eq('a')
        slack = backend.provider == 'etcd' ? 1.5 : 0.1
        sleep([started + ttl + slack - monotonic, 0].max)
        expect(libkv('get', '/reg/gone', opts)).to be_nil
        expect(libkv('exists', '/reg/gone', opts)).to be(false)
        expect(libkv('list', '/reg', opts)).to eq('kept' => 'b2', 'plain' => 'c')
        expect(libkv('atomic_get', '/reg/gone', opts)).to eq(libkv('empty_value'))
      end

      it 'lets a lock newlock took lapse after its ttl: another takes it, and the old one cannot unlock it' do
        old = libkv('newlock', '/locks/lapse', opts('ttl' => ttl, 'timeout' => 0))
        started = monotonic
        slack = { 'etcd' => 1.5, 'consul' => ttl }.fetch(backend.provider, 0.5)
        taken = libkv('newlock', '/locks/lapse', opts('ttl' => 60, 'timeout' => ttl + slack + 2))
        waited = monotonic - started
        expect(waited).to be >= ttl - 0.1
        expect(waited).to be <= ttl + slack + 1
        expect(taken['fence']).to be > old['fence']
        expect(libkv('unlock', old, opts)).to be(false)
        expect(libkv('get', '/locks/lapse', opts)).to eq(taken['owner'])
        expect(libkv('unlock', taken, opts)).to be(true)
      end
    end
  end

  context 'in a catalog', type: :host do
    include LibKVTest::CatalogHelpers


    it 'runs with_lock blocks with and without the lock parameter, and keeps locks newlock took' do
      url = "file://#{tmp}/store"
      catalog = compile(<<~PP)
        $opts = { 'url' => '#{url}' }
        $fence = libkv::with_lock("/locks/${trusted['certname']}", $opts) |$lock| {
          libkv::put('/app/secret', 'generated', $opts)
          $lock['fence']
        }
        $plain = libkv::with_lock('/locks/plain', $opts) || { 'no parameter' }
        $held = libkv::newlock('/locks/restart', $opts + { 'ttl' => 600 })
        notify { 'fence': message => String($fence) }
        notify { 'plain': message => $plain }
        notify { 'held': message => $held['owner'] }
      PP
      fence = Integer(catalog.resource('Notify', 'fence')[:message])
      expect(fence).to be > 0
      expect(catalog.resource('Notify', 'plain')[:message]).to eq('no parameter')
      store = LibKV.open(url)
      expect(store.get('/app/secret')).to eq('generated')
      # The lock named from $trusted was taken, then released.
      expect(store.exists('/locks/web01.example.com')).to be(false)
      expect(store.newlock('/locks/web01.example.com', timeout: 0).fence).to be > fence
      # newlock's lock outlives the compilation, until its ttl or unlock.
      expect(store.get('/locks/restart')).to eq(catalog.resource('Notify', 'held')[:message])
    end
  end
end
