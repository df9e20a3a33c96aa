# frozen_string_literal: true

require 'spec_helper_puppet'

RSpec.describe 'libkv::supports' do
  all = %w[get put delete exists list deletetree atomic_create atomic_get atomic_put atomic_delete
           atomic_list empty_value info provider supports newlock unlock with_lock watch watchtree]

  LibKVTest.each_backend(self) do |_backend|
    it 'lists every libkv function' do
      expect(libkv('supports', opts)).to match_array(all)
    end
  end

  it 'names only functions that exist' do
    libkv('supports', 'url' => 'mock://').each do |name|
      expect(find_function("libkv::#{name}")).not_to be_nil, name
    end
  end
end
