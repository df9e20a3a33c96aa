# frozen_string_literal: true

require 'spec_helper_puppet'

RSpec.describe 'libkv::list' do
  LibKVTest.each_backend(self) do |backend|
    it_behaves_like 'a libkv key function', 'list'
    it_behaves_like 'a libkv key function on a failing store', 'list' if backend.broken

    it 'returns every key below the directory, relative to it, with typed values' do
      libkv('put', '/hosts/web01', '10.0.0.1', opts)
      libkv('put', '/hosts/db/primary', { 'ip' => '10.0.0.2', 'port' => 5432 }, opts)
      libkv('put', '/hostsx', 'not below', opts)
      expected = { 'db/primary' => { 'ip' => '10.0.0.2', 'port' => 5432 }, 'web01' => '10.0.0.1' }
      expect(libkv('list', '/hosts', opts)).to eq(expected)
      expect(libkv('list', '/hosts/', opts)).to eq(expected)
      expect(libkv('list', '/', opts).keys).to eq(['hosts/db/primary', 'hosts/web01', 'hostsx'])
    end

    it 'returns an empty Hash for a missing directory' do
      expect(libkv('list', '/nothing', opts)).to eq({})
    end

    it 'with serialize false returns the stored bytes as Strings' do
      libkv('put', '/l/n', 1, opts)
      expect(libkv('list', '/l', opts('serialize' => false))).to eq('n' => '{"libkv":1,"value":1}')
    end
  end
end
