# frozen_string_literal: true

require 'spec_helper_puppet'

RSpec.describe 'libkv::empty_value' do
  it { is_expected.to run.with_params.and_return('value' => nil, 'sequence' => 0) }
  it { is_expected.to run.with_params('url' => 'mock://').and_return('value' => nil, 'sequence' => 0) }
  it { is_expected.to run.with_params('a', 'b').and_raise_error(ArgumentError, /expects/) }

  it 'returns a new Hash each time' do
    first = libkv('empty_value')
    expect(first).not_to be_frozen
    expect(libkv('empty_value')).not_to equal(first)
  end
end
