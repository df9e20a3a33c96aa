# frozen_string_literal: true

require 'spec_helper_puppet'

RSpec.describe 'libkv::deletetree' do
  LibKVTest.each_backend(self) do |backend|
    it_behaves_like 'a libkv key function', 'deletetree'
    it_behaves_like 'a libkv key function on a failing store', 'deletetree' if backend.broken

    it 'deletes every key below the directory and nothing else' do
      %w[/t/a /t/b/c /tt /u].each { |k| libkv('put', k, 'v', opts) }
      expect(libkv('deletetree', '/t', opts)).to be(true)
      expect(libkv('list', '/', opts).keys).to eq(%w[tt u])
      expect(libkv('deletetree', '/absent', opts)).to be(true)
      expect(libkv('deletetree', '/', opts)).to be(true)
      expect(libkv('list', '/', opts)).to eq({})
    end
  end
end
