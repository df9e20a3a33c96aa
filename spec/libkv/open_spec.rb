# frozen_string_literal: true

require 'spec_helper'
require 'pathname'

RSpec.describe 'LibKV.open' do
  let(:root) { File.join(tmp, 'store') }

  def open_legacy(**options)
    options = { vardir: File.join(tmp, 'vardir'), environment: 'production' }.merge(options)
    LibKV.open('legacy-simp6://', **options)
  end

  # The error LibKV.open raises, which must be a LibKV::InvalidArgumentError.
  def open_refused(url, auth = {}, **options)
    LibKV.open(url, auth, **options)
  rescue LibKV::Error => e
    expect(e).to be_a(LibKV::InvalidArgumentError), "#{url}: #{e.class}: #{e.message}"
    e
  else
    raise RSpec::Expectations::ExpectationNotMetError, "LibKV.open(#{url.inspect}) did not raise"
  end

  describe 'the store class of each URL form' do
    it 'mock:// is a LibKV::Mock' do
      store = LibKV.open('mock://')
      expect(store).to be_an_instance_of(LibKV::Mock)
      expect(store.provider).to eq('mock')
      expect(store.url).to eq('mock://')
    end

    it 'mock://NAME is a LibKV::Mock with that name in its URL' do
      store = LibKV.open('mock://tests-1.a_b')
      expect(store).to be_an_instance_of(LibKV::Mock)
      expect(store.url).to eq('mock://tests-1.a_b')
    end

    it 'each mock:// store is new and empty, even with the same name, and lives as long as the object' do
      one = LibKV.open('mock://same')
      one.put('/k', 1)
      two = LibKV.open('mock://same')
      expect(two.get('/k')).to be_nil
      expect(one.get('/k')).to eq(1)
    end

    it 'file:///ROOT is a LibKV::File' do
      store = LibKV.open("file://#{root}")
      expect(store).to be_an_instance_of(LibKV::File)
      expect(store.provider).to eq('file')
      expect(store.url).to eq("file://#{root}")
      expect(store.info).to include('provider' => 'file', 'url' => "file://#{root}", 'root' => root)
    end

    it 'file://localhost/ROOT/ is a LibKV::File with the canonical URL' do
      store = LibKV.open("file://localhost#{root}/")
      expect(store).to be_an_instance_of(LibKV::File)
      expect(store.url).to eq("file://#{root}")
    end

    it 'file:// decodes percent escapes in the root' do
      store = LibKV.open("file://#{tmp}/my%20store")
      expect(store.info['root']).to eq(File.join(tmp, 'my store'))
      store.put('/k', 'v')
      expect(File.read(File.join(tmp, 'my store', 'k'))).to eq('v')
    end

    it 'legacy-simp6:// is a LibKV::LegacySimp6, a subclass of LibKV::File' do
      expect(LibKV::LegacySimp6.superclass).to eq(LibKV::File)
      store = open_legacy
      expect(store).to be_an_instance_of(LibKV::LegacySimp6)
      expect(store).to be_a(LibKV::File)
      expect(store.provider).to eq('legacy-simp6')
      expect(store.url).to eq('legacy-simp6://')
      expect(LibKV.open('legacy-simp6:///', vardir: tmp, environment: 'production')).to be_an_instance_of(LibKV::LegacySimp6)
    end

    it 'legacy-simp6:// takes vardir and environment as anything with to_s' do
      store = LibKV.open('legacy-simp6://', vardir: Pathname(tmp), environment: :test)
      expect(store.info['root']).to eq(File.join(tmp, 'simp', 'environments', 'test', 'simp_autofiles'))
    end

    it 'every store class is a LibKV::Store' do
      [LibKV::Mock, LibKV::File, LibKV::LegacySimp6, LibKV::Consul, LibKV::Etcd, LibKV::ZooKeeper, LibKV::SQLite].each do |c|
        expect(c.ancestors).to include(LibKV::Store)
      end
    end

    it 'etcd:// and etcd+ssl:// open a LibKV::Etcd without connecting, in canonical form' do
      {
        'etcd://127.0.0.1:2379/puppet' => 'etcd://127.0.0.1:2379/puppet',
        'etcd+ssl://a:1,b:2/p/' => 'etcd+ssl://a:1,b:2/p',
        'etcd://[::1]' => 'etcd://[::1]:2379',
      }.each do |url, canonical|
        store = LibKV.open(url)
        expect(store).to be_an_instance_of(LibKV::Etcd)
        expect(store.provider).to eq('etcd')
        expect(store.url).to eq(canonical)
      end
    end

    it 'zookeeper:// is refused until the ZooKeeper store is available, saying so', unless: ENV['LIBKV_ZOOKEEPER_PREVIEW'] do
      expect { LibKV.open('zookeeper://127.0.0.1:2181/puppet') }
        .to raise_error(LibKV::InvalidArgumentError, /ZooKeeper store is not available yet.*LIBKV_ZOOKEEPER_PREVIEW=1/)
    end

    it 'zookeeper:// opens a LibKV::ZooKeeper without connecting, in canonical form', if: ENV['LIBKV_ZOOKEEPER_PREVIEW'] do
      {
        'zookeeper://127.0.0.1:2181/puppet' => 'zookeeper://127.0.0.1:2181/puppet',
        'zookeeper://a:1,b:2/p/' => 'zookeeper://a:1,b:2/p',
        'zookeeper://[::1]' => 'zookeeper://[::1]:2181',
      }.each do |url, canonical|
        store = LibKV.open(url)
        expect(store).to be_an_instance_of(LibKV::ZooKeeper)
        expect(store.provider).to eq('zookeeper')
        expect(store.url).to eq(canonical)
      end
    end

    it 'sqlite:// opens a LibKV::SQLite on its file, in canonical form' do
      Dir.mktmpdir do |dir|
        { "sqlite://#{dir}/kv.db" => "sqlite://#{dir}/kv.db", "sqlite://localhost#{dir}//a/kv.db" => "sqlite://#{dir}/a/kv.db" }
          .each do |url, canonical|
          store = LibKV.open(url)
          expect(store).to be_an_instance_of(LibKV::SQLite)
          expect(store.provider).to eq('sqlite')
          expect(store.url).to eq(canonical)
        end
      end
    end

    it 'consul:// and its +ssl forms open a LibKV::Consul without connecting, in canonical form' do
      {
        'consul://127.0.0.1:8500/puppet' => 'consul://127.0.0.1:8500/puppet',
        'consul+ssl://h/p' => 'consul+ssl://h:8500/p',
        'consul+ssl+verify://h/p' => 'consul+ssl://h:8500/p',
        'consul+ssl+noverify://h:1/p/' => 'consul+ssl+noverify://h:1/p',
      }.each do |url, canonical|
        store = LibKV.open(url)
        expect(store).to be_an_instance_of(LibKV::Consul)
        expect(store.provider).to eq('consul')
        expect(store.url).to eq(canonical)
      end
    end
  end

  describe 'malformed URLs' do
    {
      'no-scheme' => /no ':\/\/'/,
      '/var/lib/libkv' => /no ':\/\/'/,
      'ftp://host/x' => /unknown scheme "ftp"/,
      'mock://a/b' => /no path/,
      'mock://a b' => /NAME uses only/,
      'file://' => /absolute root/,
      'file:///' => /'\/' cannot be a store root/,
      'file://host/x' => /on this machine/,
      'sqlite://' => /absolute file: sqlite:\/\/\/ABSOLUTE\/FILE.db/,
      'sqlite:///' => /'\/' is a directory/,
      'sqlite:///var/lib/' => /ends with '\/'/,
      'sqlite://host/x.db' => /a file on this machine/,
      'sqlite:///a/../x.db' => /'\.' or '\.\.'/,
      'zookeeper://' => /names no HOST/,
      'zookeeper://h:99999/p' => /port/,
      'file:///a/../b' => /'\.' or '\.\.' components/,
      'file:///a/./b' => /'\.' or '\.\.' components/,
      'file:///a%zz' => /percent escape/,
      'file:///a%2' => /percent escape/,
      'file:///a%00b' => /NUL/,
      'legacy-simp6://host' => /takes no host or path/,
      'legacy-simp6:///var' => /takes no host or path/,
      'consul://h:0/p' => /bad port/,
      'consul://h:99999/p' => /bad port/,
      'consul://h:x/p' => /bad port/,
      'consul:///p' => /names no HOST/,
      'consul://h/a b' => /bad PREFIX/,
      'consul://h/a//b' => /bad PREFIX/,
      'etcd://' => /names no HOST/,
      'etcd://a:1,,b:2/p' => /names no HOST/,
      'etcd://[::1/p' => /unclosed '\['/,
      'etcd://h!/p' => /bad host/,
      'mock://?x=1' => /query strings/,
      'file:///srv/kv#frag' => /query strings and fragments/
    }.each do |url, why|
      it "#{url.inspect} raises LibKV::InvalidArgumentError saying why" do
        e = open_refused(url)
        expect(e.message).to match(why)
        expect(e.message).to include('invalid store URL')
        expect(e.key).to be_nil
      end
    end

    it 'refuses a URL with user:password@ without printing the password' do
      ['consul://admin:hunter2@127.0.0.1:8500/p', 'etcd://root:hunter2@h/p', 'file://u:hunter2@/srv/kv',
       'mock://x:hunter2@'].each do |url|
        e = open_refused(url)
        expect(e.message).to include('credentials do not belong in the URL')
        expect(e.message).not_to include('hunter2')
        expect(e.message).to include('***')
        expect(e.full_message).not_to include('hunter2')
      end
    end

    it 'refuses a URL with a query string without printing it' do
      e = open_refused('consul://h/p?token=hunter2')
      expect(e.message).not_to include('hunter2')
    end

    it 'raises TypeError for a url that is not a String' do
      [nil, :'mock://', 1].each do |url|
        expect { LibKV.open(url) }.to raise_error(TypeError, /url must be a String/)
      end
    end
  end

  describe 'auth' do
    it 'refuses unknown auth keys naming the key but never the value' do
      [{ 'pasword' => 'hunter2' }, { pasword: 'hunter2' }, { 'pasword' => 'hunter2', token: 't' }].each do |auth|
        # Ruby 2.6 takes a last Hash of Symbol keys for keywords: see below.
        e = if RUBY_VERSION < '2.7' && auth.keys.all? { |k| k.is_a?(Symbol) }
              expect { LibKV.open('mock://', auth) }.to raise_error(ArgumentError) { |err| @error = err }
              @error
            else
              open_refused('mock://', auth)
            end
        expect(e.message).to include('pasword')
        expect(e.message).not_to include('hunter2')
      end
    end

    it 'refuses a keyword LibKV.open does not take with ArgumentError naming it, never taking it for auth' do
      ['mock://', "file://#{root}", 'etcd://127.0.0.1:1/p'].each do |url|
        expect { LibKV.open(url, timout: 2) }.to raise_error(ArgumentError) { |e|
          expect(e.message).to start_with('unknown keyword: :timout; LibKV.open takes timeout:, vardir: and environment:')
        }
        expect { LibKV.open(url, {}, timeout: 2, vardri: '/x') }.to raise_error(ArgumentError, /unknown keyword: :vardri/)
      end
    end

    it 'takes auth settings in the auth Hash only (on Ruby 2.6, a last Symbol-keyed Hash of them too)' do
      consul = 'consul://127.0.0.1:1/p'
      expect(LibKV.open(consul, { 'token' => 't' }, timeout: 2)).to be_a(LibKV::Consul)
      expect(LibKV.open(consul, { token: 't' }, timeout: 2)).to be_a(LibKV::Consul)
      if RUBY_VERSION < '2.7'
        # LibKV.open(url, { token: 't' }) arrives as keywords, each an auth setting,
        # so they are the auth.
        expect(LibKV.open(consul, { token: 't' })).to be_a(LibKV::Consul)
        expect { LibKV.open('mock://', { token: 't' }) }.to raise_error(LibKV::InvalidArgumentError, /takes no auth/)
        expect { LibKV.open('mock://', { 'password' => 'p', token: 't' }) }
          .to raise_error(LibKV::InvalidArgumentError, /takes no auth settings, but "password"/)
      else
        expect(LibKV.open(consul, { token: 't' })).to be_a(LibKV::Consul)
        expect { LibKV.open(consul, token: 't') }.to raise_error(ArgumentError, /unknown keyword: :token/)
        expect { LibKV.open(consul, {}, token: 't') }.to raise_error(ArgumentError, /unknown keyword: :token/)
      end
    end

    it 'refuses auth settings the store does not use, naming the setting but never the value' do
      e = open_refused('mock://', { 'password' => 'hunter2' })
      expect(e.message).to include('password')
      expect(e.message).not_to include('hunter2')
      e = open_refused("file://#{root}", { token: 'hunter2' })
      expect(e.message).to include('token')
      expect(e.message).not_to include('hunter2')
      expect(File.exist?(root)).to be(false)
    end

    it 'refuses non-String auth values naming the setting, never the value' do
      [{ 'password' => 73_218_924 }, { token: :hunter2 }, { 'username' => ['hunter2'] },
       { 'ca_file' => nil }].each do |auth|
        e = open_refused('mock://', auth)
        name = auth.keys.first.to_s
        expect(e.message).to include(name).and include('must be a String')
        expect(e.message).not_to include(auth.values.first.inspect.delete('[]:"'))
      end
    end

    # As a url: another encoding converted, bytes that are not text refused with an
    # EncodingError (not taken for a value of the wrong type), never the value shown.
    it 'converts auth names and values in other encodings, and refuses what is not UTF-8 text' do
      consul = 'consul://127.0.0.1:1/p'
      latin1 = "hunter\u00e9".encode(Encoding::ISO_8859_1)
      expect(LibKV.open(consul, { 'token' => latin1 })).to be_a(LibKV::Consul)
      expect(LibKV.open(consul, { 'token'.encode(Encoding::UTF_16LE) => 'hunter2' })).to be_a(LibKV::Consul)
      {
        { 'token' => "hunter\xE9".dup.force_encoding(Encoding::UTF_8) } => 'invalid byte sequence in UTF-8',
        { 'token' => "hunter\xE9".b } => "expected utf-8, got #{Encoding::BINARY.name}",
        { "tok\xE9".dup.force_encoding(Encoding::UTF_8) => 'hunter2' } => 'invalid byte sequence in UTF-8',
        { "tok\xE9".b => 'hunter2' } => "expected utf-8, got #{Encoding::BINARY.name}",
      }.each do |auth, message|
        expect { LibKV.open(consul, auth) }.to raise_error(EncodingError, message) { |e|
          expect(e.message).not_to include('hunter')
        }
      end
    end

    it 'refuses auth keys that are neither Strings nor Symbols' do
      e = open_refused('mock://', { 1 => 'hunter2' })
      expect(e.message).not_to include('hunter2')
    end

    it 'raises TypeError for auth that is not a Hash' do
      expect { LibKV.open('mock://', 'token') }.to raise_error(TypeError, /auth must be a Hash/)
      expect { LibKV.open('mock://', nil) }.to raise_error(TypeError, /auth must be a Hash/)
    end
  end

  describe 'timeout' do
    it 'accepts a positive number of seconds' do
      [1, 0.5, 2.5, Rational(1, 2), 3600].each do |t|
        expect(LibKV.open('mock://', timeout: t)).to be_a(LibKV::Mock)
      end
    end

    it 'refuses 0, -1, NaN, Infinity and more than an hour with LibKV::InvalidArgumentError' do
      [0, -1, 0.0, -0.5, Float::NAN, Float::INFINITY, 3601].each do |t|
        e = open_refused('mock://', timeout: t)
        expect(e.message).to include('timeout')
      end
    end

    it "refuses a timeout that is not a number ('x', nil) with TypeError" do
      ['x', nil, '5'].each do |t|
        expect { LibKV.open('mock://', timeout: t) }.to raise_error(TypeError, /timeout/)
      end
    end
  end

  describe 'legacy-simp6:// options' do
    it 'raises a clear error without vardir or environment' do
      [{}, { vardir: tmp }, { environment: 'production' }].each do |options|
        e = open_refused('legacy-simp6://', **options)
        expect(e.message).to include('vardir').and include('environment')
      end
    end

    it 'refuses a relative vardir' do
      e = open_refused('legacy-simp6://', vardir: 'relative/dir', environment: 'production')
      expect(e.message).to include('vardir must be an absolute path')
    end

    it 'refuses an environment that is not a Puppet environment name' do
      ['../etc', '', 'a/b', 'prod-1'].each do |env|
        e = open_refused('legacy-simp6://', vardir: tmp, environment: env)
        expect(e.message).to include('environment')
      end
    end
  end

  # As MRI's extension takes a String argument: converted to UTF-8, or refused
  # with an EncodingError, never sent as other bytes (the same under JRuby).
  describe 'url, vardir and environment in other encodings' do
    def latin1(text)
      text.encode(Encoding::ISO_8859_1)
    end

    it 'converts a url, vardir and environment in another encoding to UTF-8' do
      store = LibKV.open(latin1("file://#{tmp}/caf\u00e9"))
      expect(store.url).to eq("file://#{tmp}/caf\u00e9")
      store.put('/k', 'v')
      expect(File.read(File.join(tmp, "caf\u00e9", 'k'))).to eq('v')
      expect(LibKV.open('mock://x'.encode(Encoding::UTF_16LE)).url).to eq('mock://x')
      expect(LibKV.open('mock://x'.b).url).to eq('mock://x')
      legacy = LibKV.open('legacy-simp6://', vardir: latin1(File.join(tmp, "v\u00e9")), environment: latin1('test'))
      expect(legacy.info['root']).to eq(File.join(tmp, "v\u00e9", 'simp', 'environments', 'test', 'simp_autofiles'))
      e = open_refused('legacy-simp6://', vardir: tmp, environment: latin1("prod\u00e9"))
      expect(e.message).to include("environment \"prod\u00e9\"")
    end

    it 'refuses invalid UTF-8 and what does not convert with EncodingError, before anything else' do
      invalid = "caf\xE9".dup.force_encoding(Encoding::UTF_8)
      invalid_dir = "#{tmp}/caf\xE9".dup.force_encoding(Encoding::UTF_8)
      {
        ["file://#{invalid_dir}".dup.force_encoding(Encoding::UTF_8)] => 'invalid byte sequence in UTF-8',
        ["mock://\xE9".dup.force_encoding(Encoding::US_ASCII)] => 'invalid byte sequence in UTF-8',
        ["file://#{tmp}/caf\xE9".b] => "expected utf-8, got #{Encoding::BINARY.name}",
        ["mock://\x81".dup.force_encoding(Encoding::Windows_1252)] => 'expected utf-8, got Windows-1252',
        ['legacy-simp6://', { vardir: invalid_dir, environment: 'production' }] =>
          'invalid byte sequence in UTF-8',
        ['legacy-simp6://', { vardir: "#{tmp}/v\xE9".b, environment: 'production' }] =>
          "expected utf-8, got #{Encoding::BINARY.name}",
        ['legacy-simp6://', { vardir: tmp, environment: invalid }] => 'invalid byte sequence in UTF-8',
        ["mock://\xE9".b, { vardir: tmp, environment: invalid }] => "expected utf-8, got #{Encoding::BINARY.name}",
      }.each do |(url, options), message|
        expect { LibKV.open(url, **(options || {})) }
          .to raise_error(EncodingError, message), "#{url.inspect} #{options.inspect}"
      end
      expect(Dir.children(tmp)).to eq([])
    end
  end

  describe 'the store classes' do
    it 'cannot be instantiated with new (the allocator is undefined)' do
      [LibKV::Store, LibKV::Mock, LibKV::File, LibKV::LegacySimp6, LibKV::Consul, LibKV::Etcd].each do |c|
        expect { c.new }.to raise_error(TypeError, /allocator undefined/)
      end
      expect { LibKV::Mock.allocate }.to raise_error(TypeError)
    end
  end

  describe 'LibKV.empty_value' do
    it 'is {"value" => nil, "sequence" => 0}, a new Hash each time' do
      expect(LibKV.empty_value).to eq('value' => nil, 'sequence' => 0)
      expect(LibKV.empty_value.keys).to eq(%w[value sequence])
      LibKV.empty_value['sequence'] = 1
      expect(LibKV.empty_value).to eq('value' => nil, 'sequence' => 0)
      expect(LibKV.empty_value).not_to be(LibKV.empty_value)
    end
  end

  describe '#inspect' do
    it 'shows the class and the URL' do
      expect(LibKV.open('mock://name').inspect).to eq('#<LibKV::Mock mock://name>')
      expect(LibKV.open("file://#{root}").inspect).to eq("#<LibKV::File file://#{root}>")
      expect(open_legacy.inspect).to eq('#<LibKV::LegacySimp6 legacy-simp6://>')
      expect(LibKV.open('mock://name').to_s).to eq('#<LibKV::Mock mock://name>')
    end
  end
end
