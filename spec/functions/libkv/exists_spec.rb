# frozen_string_literal: true

require 'spec_helper_puppet'

RSpec.describe 'libkv::exists' do
  LibKVTest.each_backend(self) do |backend|
    it_behaves_like 'a libkv key function', 'exists'
    it_behaves_like 'a libkv key function on a failing store', 'exists' if backend.broken

    it 'is false for an absent key or a directory, true for a key holding any value' do
      expect(libkv('exists', '/e/k', opts)).to be(false)
      libkv('put', '/e/k', nil, opts)
      expect(libkv('exists', '/e/k', opts)).to be(true)
      expect(libkv('exists', '/e', opts)).to be(false)
      libkv('put', '/e/empty', '', opts)
      expect(libkv('exists', '/e/empty', opts)).to be(true)
    end
  end
end
