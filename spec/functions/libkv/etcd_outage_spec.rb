# frozen_string_literal: true

require 'spec_helper_puppet'

# libkv functions while their etcd is down, and after it is back.
RSpec.describe 'libkv::get', if: LibKVTest.backends.any? { |b| b.provider == 'etcd' } do
  def monotonic
    Process.clock_gettime(Process::CLOCK_MONOTONIC)
  end

  it 'fails within the timeout + 1 s (or returns the safe value with softfail), and works once etcd is back' do
    server = LibKVTest::Etcd.private_server(:plain)
    options = { 'url' => server.url('/outage'), 'timeout' => 1 }
    libkv('put', '/k', 'before', options)
    LibKVTest::Etcd.stop(server)
    libkv('pop_error')

    started = monotonic
    expect { libkv('get', '/k', options) }.to raise_error(Puppet::Error, /cannot reach the store/)
    expect(monotonic - started).to be < 2

    started = monotonic
    expect(libkv('get', '/k', options.merge('softfail' => true))).to be_nil
    expect(libkv('atomic_put', '/k', 'x', libkv('empty_value'), options.merge('softfail' => true))).to be(false)
    expect(monotonic - started).to be < 4
    expect(libkv('pop_error')).to match(%r{\Alibkv::atomic_put: atomic_put /k on #{Regexp.escape(server.url('/outage'))} failed: cannot reach the store})

    LibKVTest::Etcd.restart(server)
    expect(libkv('get', '/k', options)).to eq('before')
  end
end
