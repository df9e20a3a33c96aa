# frozen_string_literal: true

require 'spec_helper_puppet'

RSpec.describe 'libkv::put' do
  LibKVTest.each_backend(self) do |backend|
    it_behaves_like 'a libkv key function', 'put'
    it_behaves_like 'a libkv key function on a failing store', 'put' if backend.broken

    it 'replaces the value at the key' do
      expect(libkv('put', '/k', 'first', opts)).to be(true)
      expect(libkv('put', '/k', 'second', opts)).to be(true)
      expect(libkv('get', '/k', opts)).to eq('second')
    end

    it 'with serialize false stores the string form of the value' do
      libkv('put', '/n', 42, opts('serialize' => false))
      expect(libkv('get', '/n', opts)).to eq('42')
      libkv('put', '/h', { 'a' => [1, true] }, opts('serialize' => false))
      expect(libkv('get', '/h', opts)).to eq("{'a' => [1, true]}")
      libkv('put', '/b', Puppet::Pops::Types::PBinaryType::Binary.from_base64('/w=='), opts('serialize' => false))
      expect(libkv('get', '/b', opts)).to eq(Puppet::Pops::Types::PBinaryType::Binary.from_base64('/w=='))
    end

    it 'refuses values Puppet cannot store as data, naming the type and key' do
      secret = Puppet::Pops::Types::PSensitiveType::Sensitive.new('s3cret')
      expect { libkv('put', '/k', secret, opts) }
        .to raise_error(ArgumentError, %r{libkv::put: cannot store a value of type Sensitive at /k})
      expect { libkv('put', '/k', { 'when' => Puppet::Pops::Time::Timestamp.now }, opts) }
        .to raise_error(ArgumentError, /type Timestamp/)
      expect { libkv('put', '/k', [:default], opts) }.to raise_error(ArgumentError, /cannot store/)
      expect(libkv('exists', '/k', opts)).to be(false)
    end

    it 'refuses values nested more than 100 levels deep' do
      deep = (1..101).reduce('leaf') { |inner, _| [inner] }
      expect { libkv('put', '/deep', deep, opts) }.to raise_error(ArgumentError, /more than 100 levels/)
      ok = (1..100).reduce('leaf') { |inner, _| [inner] }
      libkv('put', '/deep', ok, opts)
      expect(libkv('get', '/deep', opts)).to eq(ok)
    end
  end

  context 'without a url option or Hiera default' do
    include LibKVTest::Helpers

    it 'writes to the legacy-simp6 store under vardir/simp/environments/ENV/simp_autofiles' do
      expect(libkv('put', '/gen_passwd/web01', 'from-default')).to be(true)
      path = File.join(puppet_vardir, 'simp', 'environments', 'rp_env', 'simp_autofiles', 'gen_passwd', 'web01')
      expect(File.read(path)).to eq('from-default')
      expect(libkv('provider')).to eq('legacy-simp6')
    end
  end

  context 'with auth settings the store does not use' do
    include LibKVTest::Helpers

    it 'refuses them, naming the setting and never its value' do
      libkv('pop_error')
      secret = Puppet::Pops::Types::PSensitiveType::Sensitive.new('s3cret-token')
      [{ 'url' => 'mock://', 'auth' => { 'token' => secret } },
       { 'url' => "file://#{tmp}/store", 'auth' => { 'password' => 's3cret-token' } }].each do |options|
        expect { libkv('put', '/k', 'v', options.merge('softfail' => true)) }.to raise_error(ArgumentError) { |e|
          expect(e.message).to match(/takes no auth settings, but "(token|password)" was given/)
          expect(e.message).not_to include('s3cret-token')
        }
      end
      expect(log_messages.join).not_to include('s3cret-token')
      expect(libkv('pop_error')).to be_nil
    end
  end

  context 'with an auth Hash of the wrong type' do
    # Puppet describes a Hash whose key is wrong by all its values ("got
    # Hash[Enum['', 'password'], Enum['s3cret', 'x']]"): never the auth values.
    it 'refuses it, never showing its values' do
      ['', 7, nil].each do |bad|
        auth = { 'password' => 's3cret-pw', bad => 'x' }
        [['put', '/k', 'v', { 'url' => 'mock://', 'auth' => auth, 'softfail' => true }],
         ['put', { 'key' => '/k', 'value' => 'v', 'url' => 'mock://', 'auth' => auth }]].each do |args|
          expect { libkv(*args) }.to raise_error(ArgumentError) { |e|
            expect(e.message).to match(/entry 'auth' expects a value of type Undef, Hash\[String\[1\]/)
            expect(e.message).not_to include('s3cret-pw')
          }
        end
      end
    end
  end

  context 'with an auth Hash of the wrong type in Hiera' do
    let(:hiera_config) { File.expand_path('../../fixtures-static/hiera-bad-auth/hiera.yaml', __dir__) }

    it 'refuses it, never showing its values, nor logging them when it looks them up' do
      expect { libkv('put', '/k', 'v') }.to raise_error(ArgumentError) { |e|
        expect(e.message).to match(/Hiera libkv::auth/)
        expect(e.message).not_to include('s3cret-in-hiera')
      }
      # At debug level, Puppet's lookup explains each lookup with the value found.
      expect(Puppet::Util::Log.level).to eq(:debug)
      expect(log_messages.join("\n")).not_to include('s3cret-in-hiera')
    end
  end

  context 'with Hiera defaults' do
    let(:hiera_config) { File.expand_path('../../fixtures-static/hiera/hiera.yaml', __dir__) }

    it 'uses libkv::url from Hiera, and call options win over it' do
      libkv('put', '/from-hiera', 'h')
      expect(libkv('get', '/from-hiera', 'url' => 'mock://from-hiera')).to eq('h')
      expect(libkv('get', '/from-hiera', 'url' => 'mock://other')).to be_nil
    end
  end

  context 'with softfail and a broken store in Hiera' do
    let(:hiera_config) { File.expand_path('../../fixtures-static/hiera-softfail/hiera.yaml', __dir__) }

    it 'returns false and warns' do
      expect(libkv('put', '/k', 'v')).to be(false)
      expect(log_messages(:warning).join).to include('libkv::put: put /k on file:///dev/null/libkv failed: cannot use')
      expect(libkv('pop_error')).to include('file:///dev/null/libkv')
      expect(libkv('put', '/k', 'v', 'softfail' => false, 'url' => 'mock://')).to be(true)
    end
  end
end
