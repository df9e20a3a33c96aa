# frozen_string_literal: true

require 'spec_helper_puppet'

RSpec.describe 'libkv::pop_error' do
  include LibKVTest::Helpers

  it 'is undef when no call failed softly' do
    libkv('pop_error')
    expect(libkv('pop_error')).to be_nil
  end

  it 'returns the latest soft failure only, once' do
    File.write(File.join(tmp, 'file'), '')
    broken = { 'url' => "file://#{tmp}/file/store", 'softfail' => true }
    libkv('get', '/first', broken)
    libkv('put', '/second', 'v', broken)
    message = libkv('pop_error')
    expect(message).to start_with("libkv::put: put /second on file://#{tmp}/file/store failed: cannot use")
    expect(libkv('pop_error')).to be_nil
  end

  it 'is not set by calls that raise' do
    libkv('pop_error')
    expect { libkv('get', '/bad key', 'url' => 'mock://', 'softfail' => true) }.to raise_error(ArgumentError)
    expect(libkv('pop_error')).to be_nil
  end
end
