# frozen_string_literal: true

module LibKVTest
  EMPTY = { 'value' => nil, 'sequence' => 0 }.freeze

  # How each function that takes a key is called on a fresh key, what it must
  # return there, and what softfail must return when the store fails. `prepare`
  # puts 'stored' at the key (:value) or below it (:child) first.
  KEY_FUNCTIONS = {
    'get' => { params: %w[key], args: ->(k) { [k] }, prepare: :value, result: 'stored', safe: nil },
    'put' => { params: %w[key value], args: ->(k) { [k, 'stored'] }, result: true, safe: false },
    'delete' => { params: %w[key], args: ->(k) { [k] }, prepare: :value, result: true, safe: false },
    'exists' => { params: %w[key], args: ->(k) { [k] }, prepare: :value, result: true, safe: false },
    'list' => { params: %w[key], args: ->(k) { [k] }, prepare: :child, result: { 'child' => 'stored' }, safe: {}, dir: true },
    'deletetree' => { params: %w[key], args: ->(k) { [k] }, prepare: :child, result: true, safe: false, dir: true },
    'atomic_create' => { params: %w[key value], args: ->(k) { [k, 'stored'] }, result: true, safe: false },
    'atomic_get' => {
      params: %w[key], args: ->(k) { [k] }, prepare: :value, safe: EMPTY,
      result: ->(r) { r['value'] == 'stored' && r['sequence'].is_a?(Integer) && r['sequence'] > 0 }
    },
    'atomic_put' => { params: %w[key value previous], args: ->(k) { [k, 'stored', EMPTY] }, result: true, safe: false },
    'atomic_delete' => { params: %w[key previous], args: ->(k) { [k, EMPTY] }, result: true, safe: false },
    'atomic_list' => {
      params: %w[key], args: ->(k) { [k] }, prepare: :child, safe: {}, dir: true,
      result: ->(r) { r.keys == ['child'] && r['child']['value'] == 'stored' && r['child']['sequence'] > 0 }
    },
  }.freeze
end

# What every function taking a key does on a store, in both call forms: include
# with the function's name inside `LibKVTest.each_backend`.
RSpec.shared_examples 'a libkv key function' do |name|
  spec = LibKVTest::KEY_FUNCTIONS.fetch(name)
  let(:key) { '/libkv-spec/item' }

  def prepare(spec, key)
    case spec[:prepare]
    when :value then libkv('put', key, 'stored', opts)
    when :child then libkv('put', "#{key}/child", 'stored', opts)
    end
  end

  def named(spec, key, extra = {})
    Hash[spec[:params].zip(spec[:args].call(key))].merge(extra)
  end

  def expect_result(spec, result)
    if spec[:result].respond_to?(:call)
      expect(spec[:result].call(result)).to be(true), "unexpected result #{result.inspect}"
    else
      expect(result).to eq(spec[:result])
    end
  end

  it 'works in the positional form' do
    prepare(spec, key)
    expect_result(spec, libkv(name, *spec[:args].call(key), opts))
  end

  it 'works in the named form' do
    prepare(spec, key)
    expect_result(spec, libkv(name, named(spec, key, opts)))
  end

  it 'refuses an invalid key, naming the function and the key' do
    is_expected.to run.with_params(*spec[:args].call('/bad key'), opts)
                      .and_raise_error(ArgumentError, %r{libkv::#{name}: invalid key "/bad key": character ' '})
    expect { libkv(name, named(spec, '/a/../b', opts)) }
      .to raise_error(ArgumentError, %r{libkv::#{name}: invalid key "/a/\.\./b": '\.\.' components})
    # A directory may end with '/'; a key may not.
    (spec[:dir] ? ['', 'relative', '//', '/a//b'] : ['', 'relative', '/', '/trailing/', '/a//b']).each do |bad|
      expect { libkv(name, *spec[:args].call(bad), opts) }.to raise_error(ArgumentError, /invalid key "#{Regexp.escape(bad)}"/)
    end
  end

  it 'refuses a call without its parameters' do
    expect { libkv(name) }.to raise_error(ArgumentError, /expects/)
    spec[:params].each do |param|
      without = named(spec, key, opts).reject { |k, _| k == param }
      expect { libkv(name, without) }.to raise_error(ArgumentError, /'#{param}'/)
    end
  end

  it 'refuses a key that is not a String' do
    expect { libkv(name, *spec[:args].call(42), opts) }.to raise_error(ArgumentError, /expects/)
  end

  it 'refuses unknown and mistyped options before touching the store' do
    args = spec[:args].call(key)
    expect { libkv(name, *args, opts('colour' => 'red')) }.to raise_error(ArgumentError, /colour/)
    expect { libkv(name, *args, opts('softfail' => 'yes')) }.to raise_error(ArgumentError, /softfail/)
    expect { libkv(name, *args, opts('debug' => 1)) }.to raise_error(ArgumentError, /debug/)
    expect { libkv(name, *args, opts('serialize' => 'no')) }.to raise_error(ArgumentError, /serialize/)
    expect { libkv(name, *args, opts('timeout' => 0)) }.to raise_error(ArgumentError, /timeout/)
    expect { libkv(name, *args, opts('auth' => { 'password' => 7 })) }.to raise_error(ArgumentError, /auth/)
    expect { libkv(name, *args, opts('url' => 'redis://127.0.0.1/x')) }.to raise_error(ArgumentError, /unknown scheme "redis"/)
    expect { libkv(name, named(spec, key, opts('colour' => 'red'))) }.to raise_error(ArgumentError, /colour/)
  end

  it 'logs the call at debug level, naming function, key and store, never the value' do
    args = spec[:args].call(key).map { |a| a == 'stored' ? 'secret-value-123' : a }
    libkv(name, *args, opts('debug' => true))
    line = log_messages(:debug).find { |m| m.start_with?("libkv::#{name} key=#{key} ") }
    expect(line).to match(/store=\S+ ok in \d+\.\d{3} ms/), log_messages(:debug).inspect
    expect(log_messages.join("\n")).not_to include('secret-value-123')
  end

  it 'does not log calls without debug' do
    prepare(spec, key)
    libkv(name, *spec[:args].call(key), opts)
    expect(log_messages(:debug).grep(/\Alibkv::#{name} /)).to be_empty
  end
end

# Failure handling, for backends whose store can be made to fail.
RSpec.shared_examples 'a libkv key function on a failing store' do |name|
  spec = LibKVTest::KEY_FUNCTIONS.fetch(name)
  let(:key) { '/libkv-spec/item' }

  it 'with softfail returns the safe value, warns, and pop_error tells why once' do
    libkv('pop_error')
    result = libkv(name, *spec[:args].call(key), broken_opts('softfail' => true))
    expect(result).to eq(spec[:safe])
    warning = log_messages(:warning).find { |m| m.start_with?("libkv::#{name}") }
    expect(warning).to include('softfail: returning'), log_messages.inspect
    # The safe value as Puppet shows it, not as Ruby's inspect does.
    shown = { nil => 'undef', false => 'false', {} => '{}', LibKVTest::EMPTY => "{'value' => undef, 'sequence' => 0}" }
    expect(warning).to end_with("(softfail: returning #{shown.fetch(spec[:safe])})")
    message = libkv('pop_error')
    expect(message).to start_with("libkv::#{name} with key '#{key}': ").or start_with("libkv::#{name}: ")
    expect(message).to include(key).and include(broken_options[:url]).and match(backend.failure)
    broken_options[:auth].values_at('password', 'token').compact.each do |secret|
      expect(message).not_to include(secret)
      expect(log_messages.join("\n")).not_to include(secret)
    end
    expect(libkv('pop_error')).to be_nil
  end

  it 'without softfail fails the catalog, naming the function, key and store' do
    expect { libkv(name, *spec[:args].call(key), broken_opts) }
      .to raise_error(Puppet::Error, /\Alibkv::#{name}.*#{Regexp.escape(key)}.*#{backend.failure}/)
  end

  it 'in the named form with softfail returns the safe value' do
    params = Hash[spec[:params].zip(spec[:args].call(key))].merge(broken_opts('softfail' => true))
    expect(libkv(name, params)).to eq(spec[:safe])
  end

  it 'with softfail still raises for an invalid key' do
    expect { libkv(name, *spec[:args].call('/bad key'), broken_opts('softfail' => true)) }
      .to raise_error(ArgumentError, /invalid key/)
  end
end
