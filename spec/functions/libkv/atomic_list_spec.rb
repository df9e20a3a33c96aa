# frozen_string_literal: true

require 'spec_helper_puppet'

RSpec.describe 'libkv::atomic_list' do
  LibKVTest.each_backend(self) do |backend|
    it_behaves_like 'a libkv key function', 'atomic_list'
    it_behaves_like 'a libkv key function on a failing store', 'atomic_list' if backend.broken

    it 'returns each key below the directory with what atomic_get returns for it' do
      libkv('put', '/al/a', 1, opts)
      libkv('put', '/al/b/c', 'two', opts)
      listed = libkv('atomic_list', '/al', opts)
      expect(listed.keys).to eq(['a', 'b/c'])
      expect(listed['a']).to eq(libkv('atomic_get', '/al/a', opts))
      expect(listed['b/c']).to eq(libkv('atomic_get', '/al/b/c', opts))
      expect(libkv('atomic_put', '/al/a', 2, listed['a'], opts)).to be(true)
      expect(libkv('atomic_list', '/none', opts)).to eq({})
    end
  end
end
