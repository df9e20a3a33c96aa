# frozen_string_literal: true

require 'spec_helper'

# Watches through the Ruby API (watch, watchtree, LibKV::Watch, changed,
# changedtree), on every store registered in spec/support/backends.rb, under
# MRI (the extension) and JRuby (the C ABI library through FFI) alike. etcd
# hands out every change; the other stores the latest state after each change
# they notice (LibKV::Watch#coalesces?).
RSpec.describe 'LibKV watches' do
  def monotonic
    Process.clock_gettime(Process::CLOCK_MONOTONIC)
  end

  # Events from +watch+ until one satisfies the block (that one included);
  # fails when none did within +within+ seconds.
  def events_until(watch, within = 10)
    deadline = monotonic + within
    events = []
    while monotonic < deadline
      batch = watch.next_events(0.2)
      events.concat(batch)
      return events if batch.any? { |e| yield e }
    end
    raise "no awaited event within #{within} s; events: #{events.inspect}"
  end

  LibKVTest.each_backend(self) do |b|
    let(:store) { open_store }
    let(:exact) { b.provider == 'etcd' }

    after { store.close }

    it 'supports watch and watchtree, and says whether it coalesces' do
      expect(store.supports).to include('watch', 'watchtree')
      watch = store.watch('/k')
      expect(watch.coalesces?).to be(!exact)
      expect(watch.inspect).to eq("#<LibKV::Watch#{' coalescing' unless exact}>")
      watch.stop
      expect(watch.inspect).to start_with('#<LibKV::Watch stopped')
    end

    it 'hands out the changes to a key in order: every one on etcd, else the last of each burst' do
      store.put('/w/key', 'before')
      watch = store.watch('/w/key')
      written = []
      seen = []
      3.times do |burst|
        3.times do |i|
          value = { 'burst' => burst, 'i' => i }
          store.put('/w/key', value)
          store.put('/w/beside', i)
          written << [value, store.atomic_get('/w/key')['sequence']]
        end
        last = written.last.first
        seen.concat(events_until(watch) { |e| e.value == last })
      end
      store.delete('/w/key')
      seen.concat(events_until(watch, &:delete?))
      deleted = seen.pop
      expect([deleted.type, deleted.key, deleted.value]).to eq([:delete, '/w/key', nil])
      expect(deleted.sequence).to be >= written.last.last
      expect(seen.map(&:key).uniq).to eq(['/w/key'])
      expect(seen.map(&:type).uniq).to eq([:put])
      pairs = seen.map { |e| [e.value, e.sequence] }
      if exact
        expect(pairs).to eq(written)
      else
        expect(pairs).to include(written[2], written[5], written[8])
        expect(written & pairs).to eq(pairs) # in the order written
      end
      expect(watch.next_events(0.3)).to eq([])
    end

    it 'hands out puts and deletes at any depth below a directory, whole keys, nothing beside it' do
      store.put('/t/old', 0)
      watch = store.watchtree('/t')
      store.put('/tx', 'beside')
      store.put('/t/a', 1)
      events = events_until(watch) { |e| e.key == '/t/a' }
      store.put('/t/b/c', Integer(2))
      events.concat(events_until(watch) { |e| e.key == '/t/b/c' })
      store.delete('/t/old')
      events.concat(events_until(watch) { |e| e.key == '/t/old' })
      expect(events.map { |e| [e.type, e.key, e.value] })
        .to eq([[:put, '/t/a', 1], [:put, '/t/b/c', 2], [:delete, '/t/old', nil]])
      puts_seen = events.select(&:put?).map(&:sequence)
      expect(puts_seen).to eq(puts_seen.sort)
      # A delete's sequence: on etcd the deletion's own, elsewhere no smaller than
      # the key's last.
      expect(events.last.sequence).to be >= (exact ? puts_seen.max : 1)
    end

    it 'starts after the sequence from: every later change on etcd, else the latest' do
      store.put('/f/key', 1)
      first = store.atomic_get('/f/key')['sequence']
      store.put('/f/key', 2)
      store.put('/f/key', 3)
      last = store.atomic_get('/f/key')['sequence']
      [store.watch('/f/key', from: first), store.watchtree('/f', from: first)].each do |watch|
        events = events_until(watch) { |e| e.value == 3 }
        expect(events.map(&:value)).to eq(exact ? [2, 3] : [3])
        expect(events.last.sequence).to eq(last)
        watch.stop
      end
      expect(store.watch('/f/key', from: last).next_events(0.3)).to eq([])
    end

    it 'keeps the type of values, or reads Strings with serialize false' do
      watch = store.watch('/typed')
      raw = store.watch('/typed', serialize: false)
      store.put('/typed', { 'port' => 8080, 'tls' => true })
      expect(events_until(watch, &:put?).last.value).to eq({ 'port' => 8080, 'tls' => true })
      expect(events_until(raw, &:put?).last.value).to be_a(String).and include('8080')
    end

    it 'streams with a block until the block breaks, and as an Enumerator' do
      writer = Thread.new do
        sleep 0.2
        store.put('/s/a', 'one')
      end
      event = store.watch('/s/a') { |e| break e }
      writer.join
      expect([event.type, event.key, event.value]).to eq([:put, '/s/a', 'one'])
      watch = store.watchtree('/s')
      enum = watch.each
      expect(enum).to be_a(Enumerator)
      store.put('/s/b', 'two')
      expect(enum.next.key).to eq('/s/b')
      watch.stop
    end

    it 'stops within 100 ms when another thread stops the watch or closes the store' do
      [->(watch, _) { watch.stop }, ->(_, s) { s.close }].each do |stop|
        s = open_store
        watch = s.watch('/quiet')
        waiting = Thread.new { watch.each { raise 'no change was made' } }
        sleep 0.3
        started = monotonic
        stop.call(watch, s)
        expect(waiting.join(5)).not_to be_nil
        took = monotonic - started
        puts "  [#{b.name}] watch stopped after #{(took * 1000).round(1)} ms" if ENV['LIBKV_SPEC_VERBOSE']
        expect(took).to be < 0.1
        expect(watch.stopped?).to be(true)
        expect(watch.next_events(0.1)).to eq([])
        s.close
      end
    end

    describe 'changed and changedtree (Puppet\'s watch and watchtree)' do
      it 'returns at once what differs from previous, else the change, else the unchanged at the timeout' do
        store.put('/c/key', 'v1')
        before = store.atomic_get('/c/key')
        expect(store.changed('/c/key', previous: LibKV.empty_value, timeout: 5)).to eq(before)
        started = monotonic
        expect(store.changed('/c/key', timeout: 0.3)).to eq(before)
        expect(monotonic - started).to be_between(0.3, 2)
        writer = Thread.new do
          sleep 0.3
          store.put('/c/key', 'v2')
        end
        after = store.changed('/c/key', previous: before, timeout: 10)
        writer.join
        expect(after).to eq(store.atomic_get('/c/key'))
        expect(after['value']).to eq('v2')
        expect(store.changed('/c/key', previous: after['sequence'], timeout: 0.1)).to eq(after)
        store.delete('/c/key')
        expect(store.changed('/c/key', previous: after, timeout: 5)).to eq(LibKV.empty_value)
      end

      it 'waits for anything below a directory to differ from what atomic_list returned' do
        store.put('/ct/a', 1)
        before = store.atomic_list('/ct')
        expect(store.changedtree('/ct', previous: before, timeout: 0.2)).to eq(before)
        expect(store.changedtree('/ct', previous: {}, timeout: 5)).to eq(before)
        writer = Thread.new do
          sleep 0.3
          store.put('/ct/sub/b', 2)
        end
        after = store.changedtree('/ct', previous: before, timeout: 10)
        writer.join
        expect(after.keys).to eq(%w[a sub/b])
        expect(after).to eq(store.atomic_list('/ct'))
      end

      it 'refuses what is not a previous, a timeout or a key, naming it' do
        expect { store.changed('/c', previous: { 'value' => 1 }) }
          .to raise_error(LibKV::InvalidArgumentError, %r{previous for watch /c must be what atomic_get})
        expect { store.changedtree('/c', previous: 5) }
          .to raise_error(LibKV::InvalidArgumentError, %r{previous for watchtree /c must be what atomic_list})
        expect { store.changedtree('/c', previous: { 'a' => 1 }) }
          .to raise_error(LibKV::InvalidArgumentError, /atomic_list/)
        expect { store.changed('/c', timeout: 0) }.to raise_error(LibKV::InvalidArgumentError, /timeout must be/)
        expect { store.changed('/c', timeout: '1') }.to raise_error(TypeError, /timeout must be a number/)
        expect { store.changed('bad key') }.to raise_error(LibKV::InvalidKeyError, /bad key/)
      end
    end

    it 'refuses a bad key, directory or from before any I/O' do
      expect { store.watch('/a b') }.to raise_error(LibKV::InvalidKeyError, %r{/a b})
      expect { store.watchtree('relative') }.to raise_error(LibKV::InvalidKeyError, /relative/)
      expect { store.watch('/k', from: -1) }.to raise_error(TypeError, /from must be a sequence/)
      expect { store.watch('/k', from: 'now') }.to raise_error(TypeError, /from must be a sequence/)
      expect { store.watch('/k', serialize: 'yes') }.to raise_error(TypeError, /serialize must be true or false/)
    end

    if b.broken
      it 'fails to watch a store that fails, saying why' do
        broken = open_store(broken_options)
        expect { broken.watch('/k') }.to raise_error(LibKV::StoreError, b.failure)
        expect { broken.changed('/k', timeout: 1) }.to raise_error(LibKV::StoreError, b.failure)
        broken.close
      end
    end
  end
end
