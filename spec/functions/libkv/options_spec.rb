# frozen_string_literal: true

require 'spec_helper_puppet'

# Options as code written for SIMP's libkv passes them, auth kept Sensitive, and
# values serialize => false cannot keep.
RSpec.describe 'libkv:: options' do
  include LibKVTest::Helpers

  let(:url) { "file://#{tmp}/store" }

  describe "code written for SIMP's libkv" do
    # That module's functions are called with every option spelled out, undef
    # standing for the default.
    it 'runs: an option given as undef takes its default, in both call forms' do
      simp = { 'url' => url, 'auth' => nil, 'serialize' => true, 'mode' => nil, 'softfail' => nil,
               'debug' => nil, 'timeout' => nil }
      expect(libkv('put', simp.merge('key' => '/k', 'value' => 8080))).to be(true)
      expect(libkv('get', simp.merge('key' => '/k'))).to eq(8080)
      expect(libkv('exists', '/k', simp)).to be(true)
      expect(libkv('list', simp.merge('key' => '/'))).to eq('k' => 8080)
      current = libkv('atomic_get', simp.merge('key' => '/k'))
      expect(libkv('atomic_put', simp.merge('key' => '/k', 'value' => 1, 'previous' => current))).to be(true)
      expect(libkv('get', '/k', simp.merge('serialize' => nil))).to eq(1)
    end

    it "takes mode 'puppet', what libkv does, and refuses any other mode clearly" do
      expect(libkv('put', '/k', 'v', 'url' => url, 'mode' => 'puppet')).to be(true)
      expect(libkv('get', 'key' => '/k', 'url' => url, 'mode' => 'puppet')).to eq('v')
      ['ruby', ''].each do |mode|
        [['get', '/k', { 'url' => url, 'mode' => mode }], ['get', { 'key' => '/k', 'url' => url, 'mode' => mode }]]
          .each do |args|
          expect { libkv(*args) }.to raise_error(ArgumentError, /the mode option '#{mode}' is not supported: .*set it to 'puppet'/)
        end
      end
      expect { libkv('get', '/k', 'url' => url, 'mode' => 7) }.to raise_error(ArgumentError, /entry 'mode' expects/)
    end

    it 'still refuses real typos and missing parameters' do
      expect { libkv('get', '/k', 'url' => url, 'soft_fail' => true) }
        .to raise_error(ArgumentError, /unrecognized key 'soft_fail'/)
      expect { libkv('get', 'key' => '/k', 'urll' => url) }.to raise_error(ArgumentError, /unrecognized key 'urll'/)
      expect { libkv('get', 'key' => nil, 'url' => url) }.to raise_error(ArgumentError, /entry 'key' expects a String/)
      expect { libkv('put', 'key' => '/k', 'url' => url) }.to raise_error(ArgumentError, /has no 'value' entry/)
    end
  end

  describe 'serialize => false' do
    sensitive = Puppet::Pops::Types::PSensitiveType::Sensitive
    refused = {
      'a Sensitive' => [-> { sensitive.new('s3cret') }, /cannot store a value of type Sensitive at \/k.*unwrap/],
      'a Timestamp' => [-> { Puppet::Pops::Time::Timestamp.now }, /cannot store a value of type Timestamp at \/k/],
      'a resource reference' => [lambda {
        Puppet::Pops::Types::TypeFactory.resource('file', '/tmp/x')
      }, %r{cannot store a resource reference \(File\['/tmp/x'\]\) at /k}],
      'a type' => [-> { Puppet::Pops::Types::TypeFactory.integer }, %r{cannot store a type \(Integer\) at /k}],
      'a Sensitive inside an Array' => [-> { ['a', sensitive.new('s3cret')] }, /type Sensitive at \/k/],
    }
    refused.each do |what, (make, message)|
      it "refuses #{what}, as serialize => true does, and writes nothing" do
        [false, true].each do |serialize|
          %w[put atomic_create].each do |function|
            expect { libkv(function, '/k', make.call, 'url' => url, 'serialize' => serialize) }
              .to raise_error(ArgumentError, message) { |e| expect(e.message).not_to include('s3cret') }
          end
          expect { libkv('atomic_put', '/k', make.call, LibKVTest::EMPTY, 'url' => url, 'serialize' => serialize) }
            .to raise_error(ArgumentError, message)
        end
        expect(libkv('exists', '/k', 'url' => url)).to be(false)
        expect(Dir.exist?("#{tmp}/store")).to be(false)
      end
    end

    it 'keeps what it can: the string form of data, the bytes of a Binary' do
      binary = Puppet::Pops::Types::PBinaryType::Binary.from_base64('/w==')
      { 8080 => '8080', true => 'true', [1, 'a'] => "[1, 'a']", { 'a' => nil } => "{'a' => undef}" }.each do |value, text|
        libkv('put', '/k', value, 'url' => url, 'serialize' => false)
        expect(File.read("#{tmp}/store/k")).to eq(text)
      end
      libkv('put', '/b', binary, 'url' => url, 'serialize' => false)
      expect(File.binread("#{tmp}/store/b")).to eq("\xff".b)
    end
  end
end
