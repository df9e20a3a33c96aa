# frozen_string_literal: true

# The prebuilt gem, installed with `gem install` on a machine with no compiler:
# `rake test:debian12` and `rake test:debian13` run this file in a Debian root
# that has Ruby, Puppet and puppetserver and no cc, clang, rustc, cargo or
# protoc, after `gem install --local` of pkg/libkv-VERSION-x86_64-linux.gem. It
# is not named *_spec.rb, so `rake spec` leaves it out.

require_relative '../spec_helper'
require 'open3'
require 'rbconfig'

RSpec.describe 'the prebuilt x86_64-linux gem, on a machine with no compiler' do
  root = File.expand_path('../..', __dir__)
  minor = RUBY_VERSION[/\A\d+\.\d+/]

  let(:clean_env) { { 'RUBYLIB' => nil, 'RUBYOPT' => nil, 'GEM_HOME' => nil, 'GEM_PATH' => nil } }

  it 'is on a machine where nothing could have compiled it' do
    found = %w[cc gcc clang cargo rustc protoc].select { |tool| system('sh', '-c', "command -v #{tool}", out: File::NULL) }
    expect(found).to eq([])
  end

  it "is the installed libkv, with the extension built for this Ruby (#{minor})" do
    spec = Gem::Specification.find_by_name('libkv')
    expect(spec.platform.to_s).to eq('x86_64-linux')
    expect(spec.version.to_s).to eq(LibKV::VERSION)
    expect(spec.extensions).to eq([])
    expect(Dir.glob('lib/libkv/*/libkv.so', base: spec.full_gem_path).sort)
      .to eq(%w[lib/libkv/3.1/libkv.so lib/libkv/3.3/libkv.so])
  end

  it 'gives a Ruby script a round trip of every type, through the extension of the installed gem' do
    script = <<~'RUBY'
      require 'libkv'
      store = LibKV.open(ARGV[0])
      values = { '/app/port' => 8080, '/app/name' => 'web01', '/app/ratio' => 0.5, '/app/on' => true,
                 '/app/hosts' => %w[a b], '/app/settings' => { 'tls' => true, 'peers' => [1, nil] },
                 '/app/keytab' => "\x05\x02\xff".b }
      values.each { |k, v| store.put(k, v) }
      back = values.keys.map { |k| store.get(k) }
      raise "read back #{back.inspect}" unless back == values.values && back.last.encoding == Encoding::BINARY
      print $LOADED_FEATURES.grep(%r{/libkv\.so\z}).join(',')
    RUBY
    dir = Dir.mktmpdir('libkv-prebuilt')
    out, err, status = Open3.capture3(clean_env, RbConfig.ruby, '-e', script, "file://#{dir}")
    expect(status).to be_success, err
    gem_dir = Gem::Specification.find_by_name('libkv').full_gem_path
    expect(out).to eq(File.join(gem_dir, 'lib', 'libkv', minor, 'libkv.so'))
    expect(File.read(File.join(dir, 'app', 'name'))).to eq('web01')
  ensure
    FileUtils.rm_rf(dir) if dir
  end

  it 'runs examples/basic.pp with puppet apply, the module installed from its package (no compiled code)' do
    modules = Dir.mktmpdir('libkv-modules')
    package = ENV.fetch('LIBKV_MODULE_PACKAGE')
    out, status = Open3.capture2e(clean_env, 'puppet', 'module', 'install', '--modulepath', modules,
                                  '--ignore-dependencies', '--color', 'false', package)
    expect(status).to be_success, out
    module_dir = File.join(modules, 'libkv')
    expect(File).to exist(File.join(module_dir, 'lib', 'puppet', 'functions', 'libkv', 'get.rb'))
    expect(File).to exist(File.join(module_dir, 'types', 'previous.pp'))
    expect(Dir.glob('**/*.{so,bundle,dll,dylib}', base: module_dir)).to eq([])
    vardir = File.join(modules, 'var')
    out, status = Open3.capture2e(clean_env, 'puppet', 'apply', '--modulepath', modules, '--vardir', vardir,
                                  '--color', 'false', File.join(root, 'examples', 'basic.pp'))
    expect(status).to be_success, out
    expect(out).to include('stored and read back /libkv_example/port = 8080 (Integer)')
    expect(out).to include('stored and read back /libkv_example/keytab = BQIAAABHAAIAC0VYQU1QTEUuQ09N (Binary)')
    expect(out).to include('this example has run 1 time(s) against this store')
    autofiles = File.join(vardir, 'simp', 'environments', 'production', 'simp_autofiles', 'libkv_example', 'port')
    expect(File.read(autofiles)).to eq('{"libkv":1,"value":8080}')
  ensure
    FileUtils.rm_rf(modules) if modules
  end

  it 'installs the libkv command on the PATH, which moves what puppet apply stored' do
    command = `sh -c 'command -v libkv'`.strip
    expect(command).not_to be_empty
    out, status = Open3.capture2e(clean_env, 'libkv', '--version')
    expect(status).to be_success, out
    expect(out).to eq("libkv #{LibKV::VERSION}\n")
    dir = Dir.mktmpdir('libkv-command')
    out, status = Open3.capture2e(clean_env, 'libkv', 'put', "file://#{dir}/a", '/app/port', '8080', '--type', 'integer')
    expect(status).to be_success, out
    out, status = Open3.capture2e(clean_env, 'libkv', 'cp', '--verify', "file://#{dir}/a", "file://#{dir}/b")
    expect(status).to be_success, out
    expect(out).to include('verified: every key of the source is in the destination, byte for byte (1 keys)')
    expect(File.read(File.join(dir, 'b', 'app', 'port'))).to eq('{"libkv":1,"value":8080}')
  ensure
    FileUtils.rm_rf(dir) if dir
  end
end
