# frozen_string_literal: true

require 'spec_helper_puppet'

# auth kept Sensitive, as sites keep eyaml secrets: Hiera's
# lookup_options: { libkv::auth: { convert_to: Sensitive } }, and a Sensitive
# Hash in the auth option. On a real etcd with a password.
RSpec.describe 'libkv:: auth as a Sensitive Hash', if: LibKVTest.backends.any? { |b| b.name == 'etcd-auth' } do
  include LibKVTest::Helpers

  sensitive = Puppet::Pops::Types::PSensitiveType::Sensitive
  let(:server) { LibKVTest::Etcd.server(:auth) }
  let(:url) { server.url(LibKVTest::Etcd.unique_prefix) }
  let(:password) { LibKVTest::Etcd::PASSWORD }

  context 'from Hiera, converted to Sensitive by lookup_options' do
    let(:hiera_config) do
      File.join(tmp, 'hiera').tap do |dir|
        FileUtils.mkdir_p(File.join(dir, 'data'))
        File.write(File.join(dir, 'hiera.yaml'), <<~YAML)
          ---
          version: 5
          hierarchy:
            - name: common
              path: common.yaml
        YAML
        File.write(File.join(dir, 'data', 'common.yaml'), <<~YAML)
          ---
          lookup_options:
            libkv::auth:
              convert_to: Sensitive
          libkv::url: '#{url}'
          libkv::auth:
            username: root
            password: '#{password}'
        YAML
      end + '/hiera.yaml'
    end

    it 'is used, and its values are never shown, even at debug level' do
      expect(libkv('put', '/k', 'v', 'debug' => true)).to be(true)
      expect(libkv('get', '/k')).to eq('v')
      expect(libkv('provider')).to eq('etcd')
      expect(log_messages.join("\n")).not_to include(password)
    end
  end

  context 'in the auth option' do
    it 'is used' do
      auth = sensitive.new('username' => 'root', 'password' => password)
      expect(libkv('put', '/k', 'v', 'url' => url, 'auth' => auth)).to be(true)
      expect(libkv('get', { 'key' => '/k', 'url' => url, 'auth' => auth })).to eq('v')
    end

    it 'is refused when it holds what auth cannot, never showing its values' do
      [{ 'username' => 'root', 'password' => 404 }, { 'password' => password, 7 => 'x' }, ['root', password]]
        .each do |bad|
        expect { libkv('get', '/k', 'url' => url, 'auth' => sensitive.new(bad)) }.to raise_error(ArgumentError) { |e|
          expect(e.message).to include("entry 'auth' expects")
          expect(e.message).not_to include(password)
          expect(e.message).not_to include('404')
        }
      end
    end

    it 'with a wrong password fails with the store refusing the credentials, never showing it' do
      auth = sensitive.new('username' => 'root', 'password' => 'wr0ng-s3cret')
      expect { libkv('get', '/k', 'url' => url, 'auth' => auth) }.to raise_error(Puppet::Error) { |e|
        expect(e.message).to include('authentication failed')
        expect(e.message).not_to include('wr0ng-s3cret')
      }
    end
  end
end
