# frozen_string_literal: true

require 'spec_helper_puppet'

RSpec.describe 'libkv::provider' do
  LibKVTest.each_backend(self) do |backend|
    it "is '#{backend.provider}'" do
      expect(libkv('provider', opts)).to eq(backend.provider)
    end
  end

  it { is_expected.to run.with_params('url' => 'mock://x').and_return('mock') }
  it { is_expected.to run.with_params('url' => 'nope').and_raise_error(ArgumentError, %r{invalid store URL "nope": it has no '://'}) }
end
