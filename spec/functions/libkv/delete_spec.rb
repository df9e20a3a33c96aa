# frozen_string_literal: true

require 'spec_helper_puppet'

RSpec.describe 'libkv::delete' do
  LibKVTest.each_backend(self) do |backend|
    it_behaves_like 'a libkv key function', 'delete'
    it_behaves_like 'a libkv key function on a failing store', 'delete' if backend.broken

    it 'removes the key, and returns true also for an absent key' do
      libkv('put', '/a/b', 'v', opts)
      libkv('put', '/a/c', 'w', opts)
      expect(libkv('delete', '/a/b', opts)).to be(true)
      expect(libkv('exists', '/a/b', opts)).to be(false)
      expect(libkv('get', '/a/c', opts)).to eq('w')
      expect(libkv('delete', '/a/b', opts)).to be(true)
      expect(libkv('delete', '/never/there', opts)).to be(true)
    end
  end
end
