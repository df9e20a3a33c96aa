# frozen_string_literal: true

require 'spec_helper_puppet'

RSpec.describe 'libkv::atomic_create' do
  LibKVTest.each_backend(self) do |backend|
    it_behaves_like 'a libkv key function', 'atomic_create'
    it_behaves_like 'a libkv key function on a failing store', 'atomic_create' if backend.broken

    it 'creates the key once, then leaves it alone' do
      expect(libkv('atomic_create', '/lock', 'node1', opts)).to be(true)
      expect(libkv('atomic_create', '/lock', 'node2', opts)).to be(false)
      expect(libkv('get', '/lock', opts)).to eq('node1')
    end
  end
end
