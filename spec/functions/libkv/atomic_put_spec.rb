# frozen_string_literal: true

require 'spec_helper_puppet'

RSpec.describe 'libkv::atomic_put' do
  LibKVTest.each_backend(self) do |backend|
    it_behaves_like 'a libkv key function', 'atomic_put'
    it_behaves_like 'a libkv key function on a failing store', 'atomic_put' if backend.broken

    it 'stores only while the key is unchanged since atomic_get' do
      absent = libkv('atomic_get', '/counter', opts)
      expect(libkv('atomic_put', '/counter', 1, absent, opts)).to be(true)
      expect(libkv('atomic_put', '/counter', 99, absent, opts)).to be(false)
      current = libkv('atomic_get', '/counter', opts)
      expect(current['value']).to eq(1)
      expect(libkv('atomic_put', '/counter', 2, current, opts)).to be(true)
      expect(libkv('atomic_put', '/counter', 3, current, opts)).to be(false)
      expect(libkv('get', '/counter', opts)).to eq(2)
    end

    it 'fails with a previous from before the key was deleted and created again' do
      libkv('put', '/aba', 'a', opts)
      old = libkv('atomic_get', '/aba', opts)
      libkv('delete', '/aba', opts)
      libkv('put', '/aba', 'a', opts)
      expect(libkv('atomic_put', '/aba', 'b', old, opts)).to be(false)
      expect(libkv('get', '/aba', opts)).to eq('a')
    end

    it 'refuses a previous that is not what atomic_get returns' do
      expect { libkv('atomic_put', '/k', 1, { 'sequence' => -1 }, opts) }.to raise_error(ArgumentError, /previous/)
      expect { libkv('atomic_put', '/k', 1, { 'value' => 1 }, opts) }.to raise_error(ArgumentError, /previous/)
      expect { libkv('atomic_put', '/k', 1, 'x', opts) }.to raise_error(ArgumentError, /previous/)
    end
  end
end
