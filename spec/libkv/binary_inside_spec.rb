# frozen_string_literal: true

require 'spec_helper'

RSpec.describe 'LibKV.binary_inside?' do
  it 'finds a binary String at any depth, as a value or a Hash key' do
    expect(LibKV.binary_inside?("\xff".b)).to be(true)
    expect(LibKV.binary_inside?([1, [2, { 'k' => ['x', 'y'.b] }]])).to be(true)
    expect(LibKV.binary_inside?({ 'a'.b => 1 })).to be(true)
  end

  it 'is false for values without one' do
    ['text', '', 1, 2.5, nil, true, [], {}, ['a', { 'b' => [1, nil] }], { 1 => 'x' }, :sym].each do |v|
      expect(LibKV.binary_inside?(v)).to be(false), v.inspect
    end
  end

  it 'answers true (let the caller walk) for values nested deeper than libkv stores' do
    deep = (1..200).reduce('leaf') { |inner, _| [inner] }
    expect(LibKV.binary_inside?(deep)).to be(true)
  end
end
