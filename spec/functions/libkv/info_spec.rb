# frozen_string_literal: true

require 'spec_helper_puppet'

RSpec.describe 'libkv::info' do
  LibKVTest.each_backend(self) do |backend|
    it 'describes the store: its provider and URL' do
      info = libkv('info', opts)
      expect(info).to include('provider' => backend.provider)
      expect(info['url']).to eq(store_options[:url])
    end

    it 'refuses unknown options' do
      expect { libkv('info', opts('colour' => 1)) }.to raise_error(ArgumentError, /colour/)
    end
  end

  it 'names the root of file stores' do
    root = File.join(Dir.mktmpdir('libkv-spec'), 'store')
    expect(libkv('info', 'url' => "file://#{root}")).to include('root' => root)
  ensure
    FileUtils.rm_rf(File.dirname(root))
  end
end
