# frozen_string_literal: true

require 'spec_helper'
require 'open3'

# The examples under a real `puppet apply`, through the module and the extension.
RSpec.describe 'puppet apply' do
  root = File.expand_path('../..', __dir__)
  etcd = LibKVTest.backends.any? { |b| b.provider == 'etcd' }
  consul = LibKVTest.backends.any? { |b| b.provider == 'consul' }
  sqlite = LibKVTest.backends.any? { |b| b.provider == 'sqlite' }

  include LibKVTest::PuppetApply

  def puppet_apply(root, manifest, env = {}, name = '')
    puppet_apply_file(root, File.join(root, 'examples', manifest), env, name)
  end

  it 'runs examples/basic.pp against the default store, writing under vardir' do
    out, err, status = puppet_apply(root, 'basic.pp')
    expect(status).to be_success, err
    expect(out).to include('stored and read back /libkv_example/port = 8080 (Integer)')
    expect(out).to include('stored and read back /libkv_example/settings = {tls => true, peers => {db => 10.0.0.2}} (Hash[')
    expect(out).to include('stored and read back /libkv_example/keytab = BQIAAABHAAIAC0VYQU1QTEUuQ09N (Binary)')
    expect(out).to include('this example has run 1 time(s) against this store')
    autofiles = File.join(tmp, 'puppet', 'var', 'simp', 'environments', 'production', 'simp_autofiles')
    expect(File.read(File.join(autofiles, 'libkv_example', 'password'))).to eq('correct horse battery staple')
    expect(File.read(File.join(autofiles, 'libkv_example', 'port'))).to eq('{"libkv":1,"value":8080}')

    out, err, status = puppet_apply(root, 'basic.pp')
    expect(status).to be_success, err
    expect(out).to include('this example has run 2 time(s) against this store')
  end

  it 'runs examples/basic.pp against etcd, storing and reading through it', if: etcd do
    url = LibKVTest::Etcd.server(:plain).url(LibKVTest::Etcd.unique_prefix)
    out, err, status = puppet_apply(root, 'basic.pp', 'FACTER_libkv_url' => url)
    expect(status).to be_success, err
    expect(out).to include('stored and read back /libkv_example/servers = [web01, web02] (Array[')
    expect(out).to include('the store: {provider => etcd')
    store = LibKV.open(url)
    expect(store.get('/libkv_example/port')).to eq(8080)
    expect(store.get('/libkv_example/runs')).to eq(1)
  end

  it 'waits in examples/wait.pp until another process publishes, then uses what it published' do
    url = "file://#{tmp}/store"
    # Another process: the libkv command, as an admin or another node would run
    # it (this checkout's, or with the installed gem the one on PATH).
    command = LibKVTest.checkout_lib ? File.join(root, 'exe', 'libkv') : 'libkv'
    writer = Thread.new do
      sleep 3
      Open3.capture3(command, 'put', url, '/libkv_example/nodes/db01', '10.0.0.5')
    end
    started = Process.clock_gettime(Process::CLOCK_MONOTONIC)
    out, err, status = puppet_apply(root, 'wait.pp', 'FACTER_libkv_url' => url)
    took = Process.clock_gettime(Process::CLOCK_MONOTONIC) - started
    _, put_err, put_status = writer.value
    expect(put_status).to be_success, put_err
    expect(status).to be_success, err
    expect(out).to match(/db01 is at 10\.0\.0\.5 \(sequence \d+\)/)
    # It waited for the write (3 s in), far less than its 60 s timeout.
    expect(took).to be_between(3, 40)
  end

  {
    'file' => ->(tmp) { "file://#{tmp}/store" },
    'etcd' => ->(_tmp) { LibKVTest::Etcd.server(:plain).url(LibKVTest::Etcd.unique_prefix) },
    'consul' => lambda { |_tmp|
      LibKVTest.backends.find { |b| b.provider == 'consul' }.fresh.call(nil)[:url]
    },
    'sqlite' => ->(tmp) { "sqlite://#{tmp}/store.db" },
  }.each do |store_name, make_url|
    it "counts exactly when several puppet apply processes race atomic_put on one #{store_name} key",
       if: { 'file' => true, 'etcd' => etcd, 'consul' => consul, 'sqlite' => sqlite }.fetch(store_name) do
      url = make_url.call(tmp)
      processes = 4
      increments = 15
      env = { 'FACTER_libkv_url' => url, 'FACTER_libkv_increments' => increments.to_s }
      modulepath(root)
      runs = Array.new(processes) { |i| Thread.new { puppet_apply(root, 'counter.pp', env, i.to_s) } }.map(&:value)
      runs.each { |_out, err, status| expect(status).to be_success, err }
      expect(LibKV.open(url).get('/libkv_example/counter')).to eq(processes * increments)
    end
  end
end
