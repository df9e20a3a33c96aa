# frozen_string_literal: true

require 'spec_helper_puppet'

RSpec.describe 'libkv::atomic_delete' do
  LibKVTest.each_backend(self) do |backend|
    it_behaves_like 'a libkv key function', 'atomic_delete'
    it_behaves_like 'a libkv key function on a failing store', 'atomic_delete' if backend.broken

    it 'deletes only while the key is unchanged since atomic_get' do
      libkv('put', '/lock', 'me', opts)
      mine = libkv('atomic_get', '/lock', opts)
      libkv('put', '/lock', 'someone else', opts)
      expect(libkv('atomic_delete', '/lock', mine, opts)).to be(false)
      expect(libkv('exists', '/lock', opts)).to be(true)
      current = libkv('atomic_get', '/lock', opts)
      expect(libkv('atomic_delete', '/lock', current, opts)).to be(true)
      expect(libkv('exists', '/lock', opts)).to be(false)
    end

    it 'is true for an absent key with an empty previous, false otherwise' do
      expect(libkv('atomic_delete', '/absent', libkv('empty_value'), opts)).to be(true)
      libkv('put', '/present', 'x', opts)
      expect(libkv('atomic_delete', '/present', libkv('empty_value'), opts)).to be(false)
      stale = libkv('atomic_get', '/present', opts)
      libkv('delete', '/present', opts)
      expect(libkv('atomic_delete', '/present', stale, opts)).to be(false)
    end
  end
end
