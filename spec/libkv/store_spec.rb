# frozen_string_literal: true

require 'spec_helper'

# The behaviour every store shares, written against the Ruby API only: each store
# registered in spec/support/backends.rb runs all of these examples. Store-specific
# behaviour lives in its own file (file_store_spec.rb, ...).
RSpec.shared_examples 'a libkv store' do |backend|
  subject(:store) { open_store }

  all_ops = %w[get put delete exists list deletetree atomic_create atomic_get atomic_put
               atomic_delete atomic_list empty_value info provider supports newlock unlock with_lock watch watchtree].freeze
  provider_classes = {
    'mock' => LibKV::Mock, 'file' => LibKV::File, 'legacy-simp6' => LibKV::LegacySimp6,
    'consul' => LibKV::Consul, 'etcd' => LibKV::Etcd, 'zookeeper' => LibKV::ZooKeeper, 'sqlite' => LibKV::SQLite
  }.freeze

  # Compares two values strictly: classes, String encodings and bytes, Hash key
  # order, and the sign of -0.0 (which == and eql? ignore).
  def expect_identical(actual, expected, path = 'value')
    expect(actual.class).to eq(expected.class), "#{path}: #{actual.inspect} is a #{actual.class}, expected a #{expected.class}"
    case expected
    when String
      expect(actual.encoding).to eq(expected.encoding), "#{path}: #{actual.inspect} has encoding #{actual.encoding}"
      expect(actual.bytes).to eq(expected.bytes), "#{path}: #{actual.inspect} != #{expected.inspect}"
    when Float
      expect([actual].pack('G')).to eq([expected].pack('G')), "#{path}: #{actual.inspect} != #{expected.inspect}"
    when Array
      expect(actual.length).to eq(expected.length), "#{path}: #{actual.inspect} != #{expected.inspect}"
      expected.each_with_index { |e, i| expect_identical(actual[i], e, "#{path}[#{i}]") }
    when Hash
      expect(actual.length).to eq(expected.length), "#{path}: #{actual.inspect} != #{expected.inspect}"
      actual.to_a.zip(expected.to_a).each_with_index do |((ak, av), (ek, ev)), i|
        expect_identical(ak, ek, "#{path} key ##{i}")
        expect_identical(av, ev, "#{path}[#{ek.inspect}]")
      end
    else
      expect(actual).to eq(expected), "#{path}: #{actual.inspect} != #{expected.inspect}"
    end
  end

  def nest_arrays(levels)
    v = 1
    levels.times { v = [v] }
    v
  end

  def nest_hashes(levels, key = 'k')
    v = nil
    levels.times { v = { key => v } }
    v
  end

  def monotonic
    Process.clock_gettime(Process::CLOCK_MONOTONIC)
  end

  # Adds 1 to the Integer at +key+ +times+ times with atomic_get/atomic_put,
  # retrying lost races, and fails after +deadline+.
  def increment(kv, key, times, deadline)
    times.times do
      loop do
        raise "increment of #{key} timed out" if monotonic > deadline

        current = kv.atomic_get(key)
        break if kv.atomic_put(key, current['value'].to_i + 1, current)
      end
    end
  end

  # Runs the block in a forked child, which exits 0 when the block returns and 1
  # when it raises (after printing the error).
  def fork_child
    Process.fork do
      begin
        yield
        $stdout.flush
        exit!(0)
      rescue Exception => e # rubocop:disable Lint/RescueException
        warn "child #{Process.pid}: #{e.class}: #{e.message}\n  #{Array(e.backtrace).first(5).join("\n  ")}"
        exit!(1)
      end
    end
  end

  # Waits for every child at most +timeout+ seconds, killing the ones left (so a
  # deadlock fails the example rather than hanging), and returns pid => status.
  def wait_children(pids, timeout = 60)
    deadline = monotonic + timeout
    statuses = {}
    until (pids - statuses.keys).empty?
      (pids - statuses.keys).each do |pid|
        done, status = Process.wait2(pid, Process::WNOHANG)
        statuses[done] = status if done
      end
      break if monotonic > deadline

      sleep 0.01
    end
    left = pids - statuses.keys
    left.each do |pid|
      Process.kill('KILL', pid)
      Process.wait(pid)
    end
    expect(left).to be_empty, "children #{left.inspect} still ran after #{timeout}s"
    statuses
  end

  describe 'the store itself' do
    it 'is the LibKV::Store subclass of its provider' do
      expect(provider_classes.keys).to include(store.provider)
      expect(store).to be_an_instance_of(provider_classes.fetch(store.provider))
      expect(store).to be_a(LibKV::Store)
    end

    it 'has a URL that starts with its provider and opens the same store again' do
      expect(store.url).to be_a(String)
      expect(store.url).to start_with(store.provider)
      again = open_store(store_options.merge(url: store.url))
      expect(again.url).to eq(store.url)
      expect(again.provider).to eq(store.provider)
    end

    it 'tells its provider and URL in info' do
      info = store.info
      expect(info).to be_a(Hash)
      expect(info).to include('provider' => store.provider, 'url' => store.url)
    end

    it 'supports every operation of the API, by name' do
      expect(store.supports).to all(be_a(String))
      expect(store.supports).to match_array(all_ops)
    end

    it 'gives empty_value as {"value" => nil, "sequence" => 0}, a new Hash each time' do
      expect(store.empty_value).to eq('value' => nil, 'sequence' => 0)
      expect(store.empty_value).to eq(LibKV.empty_value)
      mine = store.empty_value
      mine['sequence'] = 5
      expect(store.empty_value).to eq('value' => nil, 'sequence' => 0)
    end

    it 'shows its class and URL in inspect and to_s' do
      expect(store.inspect).to eq("#<#{store.class.name} #{store.url}>")
      expect(store.to_s).to eq(store.inspect)
    end

    it 'starts empty' do
      expect(store.list('/')).to eq({})
      expect(store.atomic_list('/')).to eq({})
    end
  end

  describe 'get, put, delete and exists' do
    it 'get returns nil for an absent key' do
      expect(store.get('/absent')).to be_nil
      expect(store.get('/absent/deeper/key')).to be_nil
    end

    it 'put returns true and get returns the value' do
      expect(store.put('/app/port', 8080)).to be(true)
      expect(store.get('/app/port')).to eql(8080)
    end

    it 'put replaces the value' do
      store.put('/k', 'one')
      expect(store.put('/k', 'two')).to be(true)
      expect(store.get('/k')).to eq('two')
    end

    it 'exists (and exists?) tells whether the key has a value' do
      expect(store.exists('/k')).to be(false)
      expect(store.exists?('/k')).to be(false)
      store.put('/k', nil)
      expect(store.exists('/k')).to be(true)
      expect(store.exists?('/k')).to be(true)
      expect(store.exists('/k/below')).to be(false)
      expect(store.exists('/other')).to be(false)
    end

    it 'exists is false for a directory that only holds keys' do
      store.put('/dir/key', 1)
      expect(store.exists('/dir')).to be(false)
    end

    it 'delete returns true and removes only that key' do
      store.put('/d/one', 1)
      store.put('/d/two', 2)
      expect(store.delete('/d/one')).to be(true)
      expect(store.exists('/d/one')).to be(false)
      expect(store.get('/d/one')).to be_nil
      expect(store.get('/d/two')).to eq(2)
    end

    it 'delete returns true for an absent key too' do
      expect(store.delete('/never/was')).to be(true)
      expect(store.delete('/never')).to be(true)
      expect(store.list('/')).to eq({})
    end

    it 'keeps keys that share a prefix apart' do
      store.put('/a/b', 'ab')
      store.put('/a/bc', 'abc')
      store.put('/ab', 'x')
      expect(store.get('/a/b')).to eq('ab')
      expect(store.get('/a/bc')).to eq('abc')
      expect(store.get('/ab')).to eq('x')
    end

    it 'accepts every key the rules allow' do
      keys = ['/.hidden', '/a/...', '/x:y/1.2.3', '/A-Z_a.z:0-9', "/#{'n' * 255}", "/#{(['s'] * 500).join('/')}"]
      keys.each_with_index do |k, i|
        expect(store.put(k, i)).to be(true)
        expect(store.get(k)).to eq(i)
      end
      expect(store.list('/').keys).to match_array(keys.map { |k| k.sub(%r{\A/}, '') })
    end
  end

  describe 'list and deletetree' do
    before do
      store.put('/dir/b', 'b')
      store.put('/dir/a', 1)
      store.put('/dir/sub/c', [1, 'c'])
      store.put('/dir-x/z', 'z')
      store.put('/other/y', 'y')
    end

    it 'list returns the keys below the directory, relative to it, sorted, with their values' do
      listing = store.list('/dir')
      expect(listing).to eq('a' => 1, 'b' => 'b', 'sub/c' => [1, 'c'])
      expect(listing.keys).to eq(%w[a b sub/c])
    end

    it "list accepts the 'dir/' form" do
      expect(store.list('/dir/')).to eq(store.list('/dir'))
      expect(store.list('/dir/sub/')).to eq('c' => [1, 'c'])
    end

    it "list of '/' returns every key, without the leading '/', sorted" do
      expect(store.list('/').keys).to eq(%w[dir-x/z dir/a dir/b dir/sub/c other/y])
      expect(store.list('/').keys).to eq(store.list('/').keys.sort)
    end

    it 'list of a missing directory is {}' do
      expect(store.list('/missing')).to eq({})
      expect(store.list('/missing/deeper/')).to eq({})
      expect(store.list('/di')).to eq({})
    end

    it 'list with serialize false returns the stored Strings' do
      listing = store.list('/dir', serialize: false)
      expect(listing['b']).to eq('b')
      expect(listing['a']).to eq('{"libkv":1,"value":1}')
      expect(listing['sub/c']).to be_a(String)
      expect(listing['sub/c']).not_to eq([1, 'c'])
    end

    it 'deletetree returns true and deletes every key below the directory, and no other' do
      expect(store.deletetree('/dir')).to be(true)
      expect(store.list('/dir')).to eq({})
      expect(store.exists('/dir/sub/c')).to be(false)
      expect(store.list('/')).to eq('dir-x/z' => 'z', 'other/y' => 'y')
    end

    it "deletetree accepts the 'dir/' form" do
      expect(store.deletetree('/dir/sub/')).to be(true)
      expect(store.list('/dir').keys).to eq(%w[a b])
    end

    it 'deletetree of a missing directory returns true and changes nothing' do
      expect(store.deletetree('/missing')).to be(true)
      expect(store.deletetree('/di')).to be(true)
      expect(store.list('/').size).to eq(5)
    end

    it "deletetree of '/' empties the store, which keeps working" do
      expect(store.deletetree('/')).to be(true)
      expect(store.list('/')).to eq({})
      expect(store.put('/again', 1)).to be(true)
      expect(store.list('/')).to eq('again' => 1)
    end

    it 'atomic_list returns value and sequence of every key below the directory, sorted' do
      listing = store.atomic_list('/dir')
      expect(listing.keys).to eq(%w[a b sub/c])
      expect(listing['a']).to eq(store.atomic_get('/dir/a'))
      expect(listing['sub/c']).to eq(store.atomic_get('/dir/sub/c'))
      expect(listing['b']['value']).to eq('b')
      listing.each_value do |v|
        expect(v.keys).to eq(%w[value sequence])
        expect(v['sequence']).to be_an(Integer).and be > 0
      end
      expect(store.atomic_list('/dir/')).to eq(listing)
    end

    it 'atomic_list of a missing directory is {}' do
      expect(store.atomic_list('/missing')).to eq({})
    end

    it 'atomic_list with serialize false returns the stored Strings' do
      expect(store.atomic_list('/dir', serialize: false)['a']['value']).to eq('{"libkv":1,"value":1}')
    end
  end

  describe 'atomic operations' do
    it 'atomic_create stores the value and returns true when the key is absent' do
      expect(store.atomic_create('/c', { 'v' => 1 })).to be(true)
      expect(store.get('/c')).to eq('v' => 1)
    end

    it 'atomic_create returns false and keeps the value when the key exists' do
      store.put('/c', 'first')
      expect(store.atomic_create('/c', 'second')).to be(false)
      expect(store.get('/c')).to eq('first')
    end

    it 'atomic_get of an absent key equals LibKV.empty_value' do
      expect(store.atomic_get('/absent')).to eq(LibKV.empty_value)
      expect(store.atomic_get('/absent/deeper')).to eq(LibKV.empty_value)
    end

    it 'atomic_get returns the value and an Integer sequence above 0' do
      store.put('/k', [1, 2])
      got = store.atomic_get('/k')
      expect(got.keys).to eq(%w[value sequence])
      expect(got['value']).to eq([1, 2])
      expect(got['sequence']).to be_an(Integer).and be > 0
    end

    it 'atomic_get does not change the sequence' do
      store.put('/k', 1)
      expect(store.atomic_get('/k')).to eq(store.atomic_get('/k'))
    end

    it 'sequences grow with every write, whichever call made it' do
      store.put('/k', 1)
      seqs = [store.atomic_get('/k')['sequence']]
      store.put('/k', 1)
      seqs << store.atomic_get('/k')['sequence']
      store.atomic_put('/k', 2, seqs.last)
      seqs << store.atomic_get('/k')['sequence']
      store.put('/other', 1)
      store.put('/k', 3)
      seqs << store.atomic_get('/k')['sequence']
      expect(seqs).to all(be_an(Integer))
      expect(seqs.each_cons(2).all? { |a, b| b > a }).to be(true), "sequences did not grow: #{seqs.inspect}"
    end

    it 'atomic_put with the current previous stores the value and returns true' do
      store.put('/k', 1)
      previous = store.atomic_get('/k')
      expect(store.atomic_put('/k', 2, previous)).to be(true)
      expect(store.get('/k')).to eq(2)
      expect(store.atomic_get('/k')['sequence']).to be > previous['sequence']
    end

    it 'atomic_put with a stale previous returns false and keeps the value' do
      store.put('/k', 1)
      stale = store.atomic_get('/k')
      store.put('/k', 2)
      expect(store.atomic_put('/k', 3, stale)).to be(false)
      expect(store.get('/k')).to eq(2)
      expect(store.atomic_put('/k', 3, stale['sequence'])).to be(false)
    end

    it 'atomic_put succeeds once per previous' do
      store.put('/k', 0)
      previous = store.atomic_get('/k')
      expect(store.atomic_put('/k', 1, previous)).to be(true)
      expect(store.atomic_put('/k', 2, previous)).to be(false)
      expect(store.get('/k')).to eq(1)
    end

    it 'atomic_put takes previous as the Hash, its Integer sequence, or a Hash with a :sequence Symbol key' do
      store.put('/k', 0)
      expect(store.atomic_put('/k', 1, store.atomic_get('/k'))).to be(true)
      expect(store.atomic_put('/k', 2, store.atomic_get('/k')['sequence'])).to be(true)
      expect(store.atomic_put('/k', 3, { sequence: store.atomic_get('/k')['sequence'] })).to be(true)
      expect(store.get('/k')).to eq(3)
    end

    it 'atomic_put with empty_value (or 0) creates an absent key, and fails on a present one' do
      expect(store.atomic_put('/new', 'v', store.empty_value)).to be(true)
      expect(store.get('/new')).to eq('v')
      expect(store.atomic_put('/new', 'w', store.empty_value)).to be(false)
      expect(store.atomic_put('/new', 'w', 0)).to be(false)
      expect(store.atomic_put('/new2/deep', 'x', 0)).to be(true)
      expect(store.get('/new2/deep')).to eq('x')
    end

    it 'atomic_put with a sequence the absent key never had returns false and creates nothing' do
      expect(store.atomic_put('/absent', 1, 12_345)).to be(false)
      expect(store.exists('/absent')).to be(false)
      expect(store.atomic_put('/absent/deeper', 1, 12_345)).to be(false)
      expect(store.list('/')).to eq({})
    end

    it 'atomic_delete with the current previous deletes the key and returns true' do
      store.put('/k', 1)
      expect(store.atomic_delete('/k', store.atomic_get('/k'))).to be(true)
      expect(store.exists('/k')).to be(false)
    end

    it 'atomic_delete takes previous as its Integer sequence or a Hash with a :sequence Symbol key' do
      store.put('/k1', 1)
      store.put('/k2', 1)
      expect(store.atomic_delete('/k1', store.atomic_get('/k1')['sequence'])).to be(true)
      expect(store.atomic_delete('/k2', { sequence: store.atomic_get('/k2')['sequence'] })).to be(true)
      expect(store.list('/')).to eq({})
    end

    it 'atomic_delete with a stale previous returns false and keeps the key' do
      store.put('/k', 1)
      stale = store.atomic_get('/k')
      store.put('/k', 2)
      expect(store.atomic_delete('/k', stale)).to be(false)
      expect(store.get('/k')).to eq(2)
      expect(store.atomic_delete('/k', store.empty_value)).to be(false)
      expect(store.get('/k')).to eq(2)
    end

    it 'atomic_delete of an absent key is true with empty_value and false with a sequence' do
      expect(store.atomic_delete('/absent', store.empty_value)).to be(true)
      expect(store.atomic_delete('/absent', 0)).to be(true)
      expect(store.atomic_delete('/absent', 7)).to be(false)
      expect(store.atomic_delete('/absent/deeper', 7)).to be(false)
    end

    it 'gives a key deleted and created again a larger sequence, so the old previous fails (no ABA)' do
      store.put('/k', 'same')
      old = store.atomic_get('/k')
      store.delete('/k')
      store.put('/k', 'same')
      renewed = store.atomic_get('/k')
      expect(renewed['sequence']).to be > old['sequence']
      expect(store.atomic_put('/k', 'changed', old)).to be(false)
      expect(store.atomic_delete('/k', old)).to be(false)
      expect(store.get('/k')).to eq('same')

      store.atomic_delete('/k', renewed)
      expect(store.atomic_create('/k', 'same')).to be(true)
      expect(store.atomic_get('/k')['sequence']).to be > renewed['sequence']
      expect(store.atomic_put('/k', 'changed', renewed)).to be(false)
    end

    it 'atomic_get, atomic_create and atomic_put keep the value types' do
      value = { 'i' => 1, 'f' => 1.0, 'b' => "\xff".b, 'n' => nil }
      store.atomic_create('/t', value)
      got = store.atomic_get('/t')
      expect_identical(got['value'], value)
      store.atomic_put('/t', [value], got)
      expect_identical(store.atomic_get('/t')['value'], [value])
      expect_identical(store.atomic_list('/')['t']['value'], [value])
    end

    malformed = ['x', {}, { 'sequence' => -1 }, { 'sequence' => 'x' }, { 'value' => 1 }, -1, 2**64, 1.5, nil,
                 { 'sequence' => nil }].freeze

    it "refuses a malformed previous with LibKV::InvalidArgumentError naming the key (#{malformed.map(&:inspect).join(', ')})" do
      store.put('/k', 1)
      before = store.atomic_get('/k')
      malformed.each do |previous|
        expect { store.atomic_put('/k', 2, previous) }
          .to raise_error(LibKV::InvalidArgumentError, %r{/k\b}), "atomic_put with #{previous.inspect}"
        expect { store.atomic_put('/absent', 2, previous) }
          .to raise_error(LibKV::InvalidArgumentError, %r{/absent\b}), "atomic_put with #{previous.inspect}"
        expect { store.atomic_delete('/k', previous) }
          .to raise_error(LibKV::InvalidArgumentError, %r{/k\b}), "atomic_delete with #{previous.inspect}"
      end
      expect(store.atomic_get('/k')).to eq(before)
      expect(store.exists('/absent')).to be(false)
    end

    it "gives the error of a malformed previous the key as #key, like a refused value's" do
      value_error = (store.put('/k', Object.new) rescue $!) # rubocop:disable Style/RescueModifier
      expect(value_error.key).to eq('/k')
      %i[atomic_put atomic_delete].each do |op|
        args = op == :atomic_put ? ['/k', 1, 'x'] : ['/k', 'x']
        expect { store.public_send(op, *args) }.to raise_error(LibKV::InvalidArgumentError) { |e|
          expect(e.key).to eq('/k'), "#{op}: #key is #{e.key.inspect}"
        }
      end
    end
  end

  describe 'value types (serialize true, the default)' do
    round_trips = {
      'Integer 0' => 0,
      'Integer 42' => 42,
      'Integer -42' => -42,
      'the smallest 64-bit Integer -2**63' => -2**63,
      'the largest 64-bit Integer 2**63-1' => 2**63 - 1,
      'Float 1.0 (as a Float, not an Integer)' => 1.0,
      'Float 0.1+0.2 exactly' => 0.1 + 0.2,
      'Float -0.0 with its sign' => -0.0,
      'Float 1e300' => 1e300,
      'Float -1.5' => -1.5,
      'the smallest Float 5e-324' => 5e-324,
      'true' => true,
      'false' => false,
      'nil' => nil,
      'a UTF-8 String' => 'naïve ✓ 日本語',
      'an empty String' => '',
      'a String with a NUL byte' => "nul\0byte",
      'a String with a newline' => "line\n",
      "a String that looks like an Integer ('42')" => '42',
      "a String that looks like JSON null ('null')" => 'null',
      'a String that looks like JSON' => '{"a":1}',
      'a String that looks like an envelope ({"libkv":1,"value":42})' => '{"libkv":1,"value":42}',
      'a String that starts like an envelope' => '{"libkv":1,"value":',
      'a binary String ("\\xff\\x00".b) as Encoding::BINARY' => "\xff\x00".b,
      'a binary String that is valid UTF-8 ("abc".b) as Encoding::BINARY' => 'abc'.b,
      'an empty binary String as Encoding::BINARY' => ''.b,
      'a binary String that starts like an envelope' => '{"libkv":1,"value":'.b + "\xff".b,
      'an empty Array' => [],
      'an empty Hash' => {},
      'an Array of every type, nil and binary included' =>
        [1, -2.5, 'two', '', nil, true, false, "\xff\xfe".b, 'ok'.b, [], {}, [nil, ["\x00".b]], { 'k' => nil }],
      'a Hash of every type, nested, nil and binary included' => {
        'int' => 1, 'float' => 2.5, 'bool' => false, 'undef' => nil, 'bin' => "\x00\x01\xff".b,
        'utf8bin' => 'text'.b, 'str' => 'x',
        'list' => [nil, 'x', [{ 'deep' => "\xc3\x28".b }], { 'n' => nil }],
        'nested' => { 'a' => { 'b' => { 'c' => [1.0, -0.0] } } }
      },
      'a Hash with its key order (z, a, m)' => { 'z' => 1, 'a' => 2, 'm' => 3 },
      'a Hash with non-String keys (Integer, nil, Array, true, Float, binary, Hash)' => {
        1 => 'one', '1' => 'string one', nil => 0, [1, 'two'] => 'array key', true => false,
        2.5 => 'float key', "\xff".b => 'binary key', { 'h' => 1 } => 'hash key', 'z' => 'last'
      },
      'a Hash that looks like a rich-data tag' => { '__ptype' => 'Binary', '__pvalue' => 'AAAA' },
      'a Hash with a __ptype key only' => { '__ptype' => 1 },
      'an Array nested 100 deep' => :arrays100,
      'a Hash nested 100 deep' => :hashes100,
      'a Hash with Integer keys nested 100 deep' => :int_hashes100
    }

    round_trips.each do |description, example_value|
      it "round-trips #{description}" do
        value = case example_value
                when :arrays100 then nest_arrays(100)
                when :hashes100 then nest_hashes(100)
                when :int_hashes100 then nest_hashes(100, 0)
                else example_value
                end
        expect(store.put('/types/v', value)).to be(true)
        expect_identical(store.get('/types/v'), value)
        expect_identical(store.list('/types')['v'], value)
        expect_identical(store.atomic_get('/types/v')['value'], value)
      end
    end

    it 'reads a String back in UTF-8' do
      store.put('/s', 'plain ascii')
      expect(store.get('/s').encoding).to eq(Encoding::UTF_8)
    end

    it 'stores Symbols as Strings (their names): as values, Hash keys and Array items' do
      store.put('/sym', :name)
      expect_identical(store.get('/sym'), 'name')
      store.put('/sym', { key: :value, 'list' => %i[a b] })
      expect_identical(store.get('/sym'), { 'key' => 'value', 'list' => %w[a b] })
    end

    it 'converts a String in another encoding (ISO-8859-1 "caf\xE9") to UTF-8' do
      latin1 = "caf\xE9".dup.force_encoding(Encoding::ISO_8859_1)
      store.put('/enc', latin1)
      expect_identical(store.get('/enc'), 'café')
      store.put('/enc', ['x'.encode(Encoding::UTF_16LE)])
      expect_identical(store.get('/enc'), ['x'])
    end

    def expect_refused(value, message = nil, op: :put)
      args = op == :atomic_put ? ['/refused', value, 0] : ['/refused', value]
      expect { store.public_send(op, *args) }.to raise_error(LibKV::InvalidArgumentError) { |e|
        expect(e).not_to be_a(LibKV::InvalidKeyError)
        expect(e.message).to include('/refused')
        expect(e.message).to match(message) if message
        expect(e.key).to eq('/refused')
      }
      expect(store.exists('/refused')).to be(false)
    end

    it 'refuses Arrays and Hashes nested 101 deep with LibKV::InvalidArgumentError' do
      expect_refused(nest_arrays(101), /100 levels/)
      expect_refused(nest_hashes(101), /100 levels/)
      expect_refused(nest_hashes(101, 0), /100 levels/)
      expect_refused({ 'a' => [nest_arrays(100)] }, /100 levels/)
    end

    it 'refuses an Array or Hash that contains itself, rather than crashing' do
      array = [1]
      array << array
      hash = { 'a' => 1 }
      hash['self'] = hash
      expect_refused(array)
      expect_refused(hash)
      expect_refused([{ 'x' => array }])
      expect_refused(array, op: :atomic_create)
    end

    it 'refuses Float::NAN and Infinity, also inside collections' do
      [Float::NAN, Float::INFINITY, -Float::INFINITY, [1, Float::NAN], { 'f' => Float::INFINITY }].each do |v|
        expect_refused(v, /finite/)
      end
      expect_refused(Float::NAN, op: :atomic_put)
    end

    it 'refuses Integers beyond 64 bits' do
      [2**63, -2**63 - 1, 2**100, [2**64]].each { |v| expect_refused(v, /64-bit/) }
    end

    it 'refuses invalid UTF-8 in a UTF-8 String, pointing at String#b' do
      expect_refused("\xff", /String#b/)
      expect_refused(['ok', "bad \xc3\x28"], /String#b/)
      expect_refused({ "\xfe" => 1 }, /String#b/)
      expect_refused("\xff", /String#b/, op: :atomic_create)
    end

    it 'refuses an Object, naming its class' do
      expect_refused(Object.new, /\bObject\b/)
      expect_refused([Time.now], /\bTime\b/)
      expect_refused({ 'r' => (1..2) }, /\bRange\b/)
      expect_refused({ Object.new => 1 }, /\bObject\b/)
    end
  end

  describe 'serialize: false' do
    it 'put requires a String' do
      [42, nil, :sym, ['a'], { 'a' => 'b' }, 1.5].each do |v|
        expect { store.put('/raw', v, serialize: false) }
          .to raise_error(LibKV::InvalidArgumentError, /String/), v.inspect
        expect { store.atomic_create('/raw', v, serialize: false) }.to raise_error(LibKV::InvalidArgumentError)
        expect { store.atomic_put('/raw', v, 0, serialize: false) }.to raise_error(LibKV::InvalidArgumentError)
      end
      expect(store.exists('/raw')).to be(false)
    end

    it 'get returns the raw stored bytes: the envelope of a value put with serialize true' do
      store.put('/i', 42)
      expect_identical(store.get('/i', serialize: false), '{"libkv":1,"value":42}')
      expect_identical(store.atomic_get('/i', serialize: false)['value'], '{"libkv":1,"value":42}')
      store.put('/s', 'text')
      expect_identical(store.get('/s', serialize: false), 'text')
    end

    it 'a String put with serialize false reads back the same with either setting' do
      ['plain', '', 'naïve ✓', '{"a":1}', '42'].each do |s|
        expect(store.put('/raw', s, serialize: false)).to be(true)
        expect_identical(store.get('/raw', serialize: false), s)
        expect_identical(store.get('/raw'), s)
      end
      expect(store.atomic_create('/raw2', 'created', serialize: false)).to be(true)
      expect_identical(store.get('/raw2'), 'created')
      expect(store.atomic_put('/raw2', 'put', store.atomic_get('/raw2'), serialize: false)).to be(true)
      expect_identical(store.get('/raw2', serialize: false), 'put')
    end

    it 'stores the bytes of a binary String, read back as a binary String' do
      store.put('/bin', "\xff\x00".b, serialize: false)
      expect_identical(store.get('/bin', serialize: false), "\xff\x00".b)
      expect_identical(store.get('/bin'), "\xff\x00".b)
    end

    it "serialize: 'yes' (or any non-boolean) raises TypeError" do
      store.put('/k', 1)
      ['yes', nil, 1, 'false'].each do |flag|
        calls = {
          get: -> { store.get('/k', serialize: flag) },
          put: -> { store.put('/k', 'v', serialize: flag) },
          list: -> { store.list('/', serialize: flag) },
          atomic_create: -> { store.atomic_create('/n', 'v', serialize: flag) },
          atomic_get: -> { store.atomic_get('/k', serialize: flag) },
          atomic_put: -> { store.atomic_put('/k', 'v', 0, serialize: flag) },
          atomic_list: -> { store.atomic_list('/', serialize: flag) }
        }
        calls.each do |op, call|
          expect(&call).to raise_error(TypeError, /serialize/), "#{op} with serialize: #{flag.inspect}"
        end
      end
      expect(store.list('/')).to eq('k' => 1)
    end
  end

  describe 'close' do
    it 'lets the store go: every later call raises LibKV::ClosedError, and another store object still works' do
      store.put('/k', 'v')
      other = open_store
      expect(store.closed?).to be(false)
      expect(store.close).to be_nil
      expect(store.closed?).to be(true)
      calls = {
        get: -> { store.get('/k') }, put: -> { store.put('/k', 1) }, delete: -> { store.delete('/k') },
        exists: -> { store.exists('/k') }, list: -> { store.list('/') }, deletetree: -> { store.deletetree('/') },
        atomic_create: -> { store.atomic_create('/n', 1) }, atomic_get: -> { store.atomic_get('/k') },
        atomic_put: -> { store.atomic_put('/k', 1, 0) }, atomic_delete: -> { store.atomic_delete('/k', 0) },
        atomic_list: -> { store.atomic_list('/') }, info: -> { store.info }
      }
      calls.each do |op, call|
        expect { call.call }.to raise_error(LibKV::ClosedError) { |e|
          expect(e.message).to eq("the store object for #{store.url} is closed; open the store again"),
                               "#{op}: #{e.message}"
        }
      end
      expect(LibKV::ClosedError.ancestors).to include(LibKV::Error)
      expect(LibKV::ClosedError.ancestors).not_to include(LibKV::StoreError)
      # What it is stays known; closing again is harmless.
      expect(store.provider).to eq(backend.provider)
      expect(store.url).to eq(url.chomp('/')).or eq(other.url)
      expect(store.close).to be_nil
      expect(other.get('/k')).to eq('v') unless backend.provider == 'mock'
    end
  end

  describe 'keys' do
    it 'LibKV::InvalidKeyError is a LibKV::InvalidArgumentError' do
      expect(LibKV::InvalidKeyError.ancestors).to include(LibKV::InvalidArgumentError, LibKV::Error)
    end

    key_ops = {
      get: ->(s, k) { s.get(k) },
      put: ->(s, k) { s.put(k, 1) },
      delete: ->(s, k) { s.delete(k) },
      exists: ->(s, k) { s.exists(k) },
      atomic_create: ->(s, k) { s.atomic_create(k, 1) },
      atomic_get: ->(s, k) { s.atomic_get(k) },
      atomic_put: ->(s, k) { s.atomic_put(k, 1, 0) },
      atomic_delete: ->(s, k) { s.atomic_delete(k, 0) }
    }.freeze
    dir_ops = {
      list: ->(s, d) { s.list(d) },
      deletetree: ->(s, d) { s.deletetree(d) },
      atomic_list: ->(s, d) { s.atomic_list(d) }
    }.freeze

    # How the message shows a key: as given, NUL and newline escaped.
    def shown(key)
      key.gsub(/[\0\n]/, "\0" => '\\0', "\n" => '\\n')
    end

    def expect_invalid_key(key, ops)
      ops.each do |op, call|
        expect { call.call(store, key) }.to raise_error(LibKV::InvalidKeyError) { |e|
          expect(e).to be_a(LibKV::InvalidArgumentError)
          expect(e.message).to include(shown(key)), "#{op}(#{key.inspect}): #{e.message}"
          expect(e.key).to eq(key), "#{op}(#{key.inspect}): #key is #{e.key.inspect}"
        }
      end
    end

    ['', 'a', '/', '/a/', '/a//b', '/a/../b', '/./a', '/a b', "/caf\u00e9", "/a\0b", '/..', '/a/.',
     "/#{'n' * 256}", "/#{'abcdefgh/' * 113}abcdefgh", '/a*', "/a\nb"].each do |key|
      it "refuses the key #{key.length > 40 ? "#{key[0, 20]}... (#{key.bytesize} bytes)" : key.inspect} with LibKV::InvalidKeyError naming it in the message and #key" do
        expect_invalid_key(key, key_ops)
        expect(store.list('/')).to eq({})
      end
    end

    ['', 'a', '//', '/a//', '/a//b', '/a/../b', '/./a', '/a b', "/caf\u00e9", "/a\0b", '/../'].each do |dir|
      it "refuses the directory #{dir.inspect} in list, deletetree and atomic_list" do
        expect_invalid_key(dir, dir_ops)
      end
    end

    it "list, deletetree and atomic_list accept '/' and the 'dir/' form ('/a/'), which key operations refuse" do
      store.put('/a/k', 1)
      expect(store.list('/')).to eq('a/k' => 1)
      expect(store.list('/a/')).to eq('k' => 1)
      expect(store.atomic_list('/a/').keys).to eq(['k'])
      expect(store.deletetree('/a/')).to be(true)
      expect(store.list('/')).to eq({})
      expect { store.get('/a/') }.to raise_error(LibKV::InvalidKeyError)
    end

    it 'checks the key before the value or previous' do
      expect { store.put('bad', Object.new) }.to raise_error(LibKV::InvalidKeyError)
      expect { store.put('bad', 1, serialize: false) }.to raise_error(LibKV::InvalidKeyError)
      expect { store.atomic_put('bad', 1, 'malformed') }.to raise_error(LibKV::InvalidKeyError)
      expect { store.atomic_delete('bad', 'malformed') }.to raise_error(LibKV::InvalidKeyError)
    end

    it 'a key in another encoding is its text: binary and UTF-16 Strings of valid keys work' do
      store.put('/enc/a'.b, 1)
      store.put('/enc/b'.encode('UTF-16LE'), 2)
      store.put('/enc/c'.encode('ISO-8859-1'), 3)
      expect(store.get('/enc/a')).to eq(1)
      expect(store.list('/enc'.encode('UTF-16LE'))).to eq('a' => 1, 'b' => 2, 'c' => 3)
    end

    it 'a key that is not valid UTF-8 raises LibKV::InvalidKeyError saying so' do
      ["/a\xffb".b, (+"/a\xff").force_encoding('UTF-8')].each do |bad|
        key_ops.merge(dir_ops).each do |op, call|
          expect { call.call(store, bad) }.to raise_error(LibKV::InvalidKeyError, /invalid key "\/a.*not valid UTF-8/),
                                              "#{op}(#{bad.inspect})"
        end
      end
      expect(store.list('/')).to eq({})
    end

    it 'a key that is not a String (nil included) raises ArgumentError naming the parameter' do
      [1, nil, :'/a', ['/a']].each do |k|
        key_ops.each do |op, call|
          expect { call.call(store, k) }.to raise_error(ArgumentError, /\Akey must be a String/), "#{op}(#{k.inspect})"
        end
        dir_ops.each do |op, call|
          expect { call.call(store, k) }.to raise_error(ArgumentError, /\Adir must be a String/), "#{op}(#{k.inspect})"
        end
      end
      expect { store.get(nil) }.to raise_error(ArgumentError, 'key must be a String like "/dir/name", not nil')
      expect(store.list('/')).to eq({})
    end
  end

  if backend.broken
    describe 'a store that cannot be used' do
      # The key each call is about, and the call.
      broken_calls = {
        get: ['/k', ->(s) { s.get('/k') }],
        put: ['/dir/k', ->(s) { s.put('/dir/k', 1) }],
        delete: ['/k', ->(s) { s.delete('/k') }],
        exists: ['/k', ->(s) { s.exists('/k') }],
        list: ['/', ->(s) { s.list('/') }],
        deletetree: ['/dir', ->(s) { s.deletetree('/dir') }],
        atomic_create: ['/k', ->(s) { s.atomic_create('/k', 1) }],
        atomic_get: ['/k', ->(s) { s.atomic_get('/k') }],
        atomic_put: ['/k', ->(s) { s.atomic_put('/k', 1, 0) }],
        atomic_delete: ['/k', ->(s) { s.atomic_delete('/k', 0) }],
        atomic_list: ['/dir', ->(s) { s.atomic_list('/dir/') }]
      }.freeze

      # A store may find out when it is opened (then LibKV.open raises, and the error
      # has no #key: it is about the whole store) or when it is used (then every call
      # raises, with the call's key as #key).
      it 'fails with LibKV::StoreError (not InvalidArgumentError) naming the URL, when opened or on every call' do
        options = broken_options
        broken = begin
          open_store(options)
        rescue LibKV::Error => open_error
          open_error
        end
        if broken.is_a?(Exception)
          expect(broken).to be_a(LibKV::StoreError)
          expect(broken).not_to be_a(LibKV::InvalidArgumentError)
          expect(broken.message).to include(options[:url])
          expect(broken.key).to be_nil
        else
          expect(broken.url).to eq(options[:url])
          broken_calls.each do |op, (key, call)|
            expect { call.call(broken) }.to raise_error(LibKV::StoreError) { |e|
              expect(e).not_to be_a(LibKV::InvalidArgumentError)
              expect(e.message).to include(options[:url]).and include(op.to_s)
              expect(e.key).to eq(key), "#{op}: #key is #{e.key.inspect}"
            }
          end
        end
      end
    end
  end

  describe 'threads' do
    it '8 threads sharing the store, each doing 25 atomic_get/atomic_put increments, end with exactly 200' do
      deadline = monotonic + 60
      threads = Array.new(8) { Thread.new { increment(store, '/counter', 25, deadline) } }
      threads.each { |t| expect(t.join(90)).not_to be_nil, 'a thread did not finish' }
      expect(store.get('/counter')).to eql(200)
    end

    it '16 threads racing atomic_create on one key: exactly one wins' do
      gate = Queue.new
      threads = Array.new(16) do |i|
        Thread.new do
          gate.pop
          [i, store.atomic_create('/race', "thread #{i}")]
        end
      end
      16.times { gate << :go }
      results = threads.map { |t| t.join(60)&.value }
      expect(results).to all(be_an(Array))
      winners = results.select { |_, created| created == true }
      expect(winners.size).to eq(1), results.inspect
      expect(results.map(&:last)).to all(be(true).or(be(false)))
      expect(store.get('/race')).to eq("thread #{winners.first.first}")
    end
  end

  describe 'processes (fork)', fork: true do
    it 'an increment race of 4 forked children (50 each) through a store opened before forking ends with exactly 200 when the store persists across processes' do
      persistent = store.provider != 'mock'
      store.put('/counter', 0)
      deadline = monotonic + 60
      pids = Array.new(4) do
        fork_child do
          increment(store, '/counter', 50, deadline)
          # Each child sees at least its own increments.
          raise 'lost increments' if store.get('/counter') < 50
        end
      end
      statuses = wait_children(pids, 90)
      expect(statuses.values.map(&:exitstatus)).to eq([0, 0, 0, 0])
      # A mock store lives in one process's memory: the children changed their copies.
      expect(store.get('/counter')).to eql(persistent ? 200 : 0)
    end

    it 'a store opened before fork keeps working in parent and child at once' do
      persistent = store.provider != 'mock'
      store.put('/before', 'fork')
      ready_r, ready_w = IO.pipe
      go_r, go_w = IO.pipe
      pid = fork_child do
        ready_r.close
        go_w.close
        ready_w.write('r')
        ready_w.close
        raise 'no go' unless go_r.read(1) == 'g'

        raise 'lost the value put before fork' unless store.get('/before') == 'fork'

        100.times do |i|
          store.put("/child/k#{i}", i)
          raise "child read back #{store.get("/child/k#{i}").inspect}" unless store.get("/child/k#{i}") == i
        end
        raise 'child list' unless store.list('/child').size == 100
      end
      ready_w.close
      go_r.close
      ready = IO.select([ready_r], nil, nil, 30) && ready_r.read(1)
      go_w.write('g') if ready
      go_w.close
      # The parent's own work runs while the child's does; it is checked after the
      # child is reaped, so a failure here never leaves the child behind.
      parent_reads = begin
        Array.new(100) do |i|
          store.put("/parent/k#{i}", [i])
          store.get("/parent/k#{i}")
        end
      rescue StandardError => e
        e
      end
      status = wait_children([pid], 60).fetch(pid)
      expect(ready).to eq('r')
      raise parent_reads if parent_reads.is_a?(Exception)

      expect(parent_reads).to eq(Array.new(100) { |i| [i] })
      expect(status.exitstatus).to eq(0)
      expect(store.list('/parent').size).to eq(100)
      expect(store.get('/before')).to eq('fork')
      if persistent
        expect(store.list('/child')).to eq(Array.new(100) { |i| ["k#{i}", i] }.sort.to_h)
        expect(store.list('/child').keys).to eq(store.list('/child').keys.sort)
      else
        # A mock store lives in one process's memory: the child wrote to its copy.
        expect(store.list('/child')).to eq({})
      end
    end
  end

  describe 'garbage collection' do
    it 'survives a put/get/list round trip of a nested value under GC.stress' do
      value = { 'list' => [1, 'two', "\xff".b, nil, { 3 => [4.5, :six] }], 'h' => { 'x' => 'y' * 100 } }
      expected = { 'list' => [1, 'two', "\xff".b, nil, { 3 => [4.5, 'six'] }], 'h' => { 'x' => 'y' * 100 } }
      begin
        GC.stress = true
        put = store.put('/gc/v', value)
        got = store.get('/gc/v')
        listed = store.list('/gc')
        versioned = store.atomic_get('/gc/v')
      ensure
        GC.stress = false
      end
      expect(put).to be(true)
      expect_identical(got, expected)
      expect_identical(listed, { 'v' => expected })
      expect_identical(versioned['value'], expected)
    end
  end
end

RSpec.describe LibKV::Store do
  LibKVTest.each_backend(self) do |b|
    it_behaves_like 'a libkv store', b
  end
end
