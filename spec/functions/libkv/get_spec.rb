# frozen_string_literal: true

require 'spec_helper_puppet'

RSpec.describe 'libkv::get' do
  binary = Puppet::Pops::Types::PBinaryType::Binary

  LibKVTest.each_backend(self) do |backend|
    it_behaves_like 'a libkv key function', 'get'
    it_behaves_like 'a libkv key function on a failing store', 'get' if backend.broken

    it 'returns undef for an absent key' do
      expect(libkv('get', '/absent', opts)).to be_nil
    end

    {
      'an Integer' => 42,
      'the largest Integer' => 2**63 - 1,
      'a negative Integer' => -7,
      'a Float' => 0.1 + 0.2,
      'a whole Float' => 3.0,
      'true' => true,
      'false' => false,
      'undef' => nil,
      'a String' => 'hunter2',
      'an empty String' => '',
      'a String that looks like JSON' => '{"libkv":1,"value":42}',
      'a Binary' => binary.from_base64('AAEC/w=='),
      'a Binary of UTF-8 text' => binary.from_binary_string('text'),
      'an Array with undef and Binary inside' => [1, 'two', nil, [3.5, binary.from_base64('/w==')]],
      'a Hash, in order' => { 'z' => 1, 'a' => { 'nested' => [true, nil] }, 'm' => '' },
      'a Hash with Integer and undef keys' => { 1 => 'one', nil => 'nothing', 'x' => 2 },
    }.each do |what, value|
      it "reads back #{what} exactly as it was put" do
        libkv('put', '/typed', value, opts)
        result = libkv('get', '/typed', opts)
        expect(result).to eq(value)
        expect(result.class).to eq(value.class)
      end
    end

    it 'with serialize false returns the stored bytes as a String' do
      libkv('put', '/n', 42, opts)
      expect(libkv('get', '/n', opts('serialize' => false))).to eq('{"libkv":1,"value":42}')
      libkv('put', '/s', 'plain', opts('serialize' => false))
      expect(libkv('get', '/s', opts('serialize' => false))).to eq('plain')
      expect(libkv('get', '/s', opts)).to eq('plain')
    end
  end
end
