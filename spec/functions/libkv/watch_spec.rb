# frozen_string_literal: true

require 'spec_helper_puppet'

# libkv::watch and libkv::watchtree on every store: one bounded wait for a
# change, with keys and values as Puppet makes them.
RSpec.describe 'libkv::watch and libkv::watchtree' do
  def monotonic
    Process.clock_gettime(Process::CLOCK_MONOTONIC)
  end

  # A String as Puppet makes it from a fact: BINARY-encoded in Ruby.
  def from_fact(text)
    text.dup.force_encoding(Encoding::BINARY)
  end

  # Writes +value+ at +key+ from a thread of this process after +delay+ seconds,
  # through a store object of its own (another Puppet node's write, as far as the
  # store can tell); on the mock (whose data lives in the compilation's store
  # object) and legacy-simp6 (whose directory is the compilation's environment's)
  # through the functions' own.
  def write_later(key, value, delay = 0.3)
    other = %w[mock legacy-simp6].include?(backend.provider) ? libkv_store : open_store
    Thread.new do
      sleep delay
      other.put(key, value)
    end
  end

  LibKVTest.each_backend(self) do |_backend|
    it 'watch returns the key once it differs from previous, as atomic_get does' do
      key = from_fact('/published/web01.example.com')
      libkv('put', key, from_fact('10.0.0.1'), opts)
      before = libkv('atomic_get', key, opts)
      writer = write_later('/published/web01.example.com', '10.0.0.2')
      started = monotonic
      after = libkv('watch', key, opts('previous' => before, 'timeout' => 10))
      writer.join
      expect(monotonic - started).to be < 5
      expect(after).to eq(libkv('atomic_get', key, opts))
      expect(after['value']).to eq('10.0.0.2')
      expect(after['sequence']).to be > before['sequence']
      # A key that differs already returns at once; an Integer previous is a sequence.
      expect(libkv('watch', key, opts('previous' => before['sequence'], 'timeout' => 10))).to eq(after)
      expect(libkv('watch', key, opts('previous' => libkv('empty_value'), 'timeout' => 10))).to eq(after)
    end

    it 'watch without previous waits for a change after the call starts, and returns the unchanged key at the timeout' do
      libkv('put', '/app/db', 'db1', opts)
      started = monotonic
      expect(libkv('watch', '/app/db', opts('timeout' => 0.5))).to eq(libkv('atomic_get', '/app/db', opts))
      expect(monotonic - started).to be_between(0.5, 3)
      writer = write_later('/app/db', 'db2')
      expect(libkv('watch', '/app/db', opts('timeout' => 10))['value']).to eq('db2')
      writer.join
      expect(libkv('watch', '/absent', opts('timeout' => 0.2))).to eq(libkv('empty_value'))
    end

    it 'watchtree returns everything below the directory once it differs from previous, as atomic_list does' do
      libkv('put', '/members/a', 1, opts)
      before = libkv('atomic_list', '/members', opts)
      writer = write_later('/members/b', 2)
      after = libkv('watchtree', from_fact('/members'), opts('previous' => before, 'timeout' => 10))
      writer.join
      expect(after.keys).to eq(%w[a b])
      expect(after).to eq(libkv('atomic_list', '/members', opts))
      expect(libkv('watchtree', '/members', opts('previous' => {}, 'timeout' => 10))).to eq(after)
      expect(libkv('watchtree', '/members', opts('timeout' => 0.2))).to eq(after)
    end

    it 'refuses a previous of the wrong shape and a bad timeout before any I/O' do
      expect { libkv('watch', '/k', opts('previous' => { 'value' => 1 })) }
        .to raise_error(ArgumentError, /previous/)
      expect { libkv('watchtree', '/k', opts('previous' => 3)) }.to raise_error(ArgumentError, /previous/)
      expect { libkv('watch', '/k', opts('timeout' => 0)) }.to raise_error(ArgumentError, /timeout/)
      expect { libkv('watch', '/k', opts('ttl' => 5)) }.to raise_error(ArgumentError, /ttl/)
      expect { libkv('watch', 'k', opts) }.to raise_error(ArgumentError, /invalid key "k"/)
    end

    it 'takes the named form' do
      libkv('put', '/named', 'v', opts)
      expect(libkv('watch', opts('key' => '/named', 'previous' => 0, 'timeout' => 5))['value']).to eq('v')
      expect(libkv('watchtree', opts('key' => '/', 'previous' => {}, 'timeout' => 5))).to include('named')
    end

    if _backend.broken
      it 'with softfail returns the empty value (watch) or {} (watchtree) when the store fails, and pop_error says why' do
        expect(libkv('watch', '/k', broken_opts('softfail' => true, 'timeout' => 1))).to eq(libkv('empty_value'))
        expect(libkv('pop_error')).to match(%r{libkv::watch})
        expect(libkv('watchtree', '/k', broken_opts('softfail' => true, 'timeout' => 1))).to eq({})
        expect { libkv('watch', '/k', broken_opts('timeout' => 1)) }.to raise_error(Puppet::Error, /libkv::watch/)
      end
    end
  end

  context 'in a catalog', type: :host do
    include LibKVTest::CatalogHelpers


    it 'waits for a key named from $trusted that another writer publishes' do
      url = "file://#{tmp}/store"
      writer = Thread.new do
        sleep 0.5
        LibKV.open(url).put('/ready/web01.example.com', 'go')
      end
      catalog = compile(<<~PP)
        $opts = { 'url' => '#{url}' }
        $got = libkv::watch("/ready/${trusted['certname']}", $opts + { 'previous' => libkv::empty_value(), 'timeout' => 20 })
        notify { 'got': message => "${got['value']} ${got['sequence']}" }
      PP
      writer.join
      value, sequence = catalog.resource('Notify', 'got')[:message].split
      expect(value).to eq('go')
      expect(Integer(sequence)).to be > 0
    end
  end
end
