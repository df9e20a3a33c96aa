# frozen_string_literal: true

require 'spec_helper_puppet'

RSpec.describe 'libkv::atomic_get' do
  LibKVTest.each_backend(self) do |backend|
    it_behaves_like 'a libkv key function', 'atomic_get'
    it_behaves_like 'a libkv key function on a failing store', 'atomic_get' if backend.broken

    it 'returns empty_value for an absent key' do
      expect(libkv('atomic_get', '/absent', opts)).to eq(libkv('empty_value'))
    end

    it 'returns the typed value with a sequence that grows with every write' do
      libkv('put', '/c', [1, { 'a' => nil }], opts)
      first = libkv('atomic_get', '/c', opts)
      expect(first['value']).to eq([1, { 'a' => nil }])
      libkv('put', '/c', 2, opts)
      second = libkv('atomic_get', '/c', opts)
      expect(second).to include('value' => 2)
      expect(second['sequence']).to be > first['sequence']
    end
  end
end
