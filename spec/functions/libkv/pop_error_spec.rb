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

  context 'across compilations' do
    let(:broken) { "{ 'url' => 'file://#{tmp}/file/store', 'softfail' => true }" }

    before { File.write(File.join(tmp, 'file'), '') }

    def compile(certname, code)
      Puppet[:code] = code
      Puppet::Parser::Compiler.compile(Puppet::Node.new(certname, environment: Puppet.lookup(:current_environment)))
    end

    # Node B's compile, in the same process (a puppetserver JRuby instance
    # compiles one catalog after another), never reads node A's soft failure.
    it 'belongs to the compilation it happened in', type: :host do
      catalog_a = compile('a.example.com', <<~PP)
        libkv::get('/secret-of-a', #{broken})
        notify { 'a': message => 'done' }
      PP
      expect(catalog_a.resource('Notify', 'a')[:message]).to eq('done')
      catalog_b = compile('b.example.com', "notify { 'b': message => String(libkv::pop_error()) }")
      expect(catalog_b.resource('Notify', 'b')[:message]).to eq('')
      catalog_c = compile('c.example.com', <<~PP)
        libkv::get('/of-c', #{broken})
        notify { 'c': message => libkv::pop_error() }
      PP
      expect(catalog_c.resource('Notify', 'c')[:message]).to start_with('libkv::get: get /of-c on ')
    end
  end

  context 'outside a compilation' do
    # Functions called from Ruby, with no compiler: the message belongs to the
    # Ruby thread.
    it 'belongs to the Ruby thread', type: :host do
      File.write(File.join(tmp, 'file'), '')
      env = Puppet::Node::Environment.create(:libkv_threads, [RSpec.configuration.module_path])
      Puppet.override(current_environment: env, loaders: Puppet::Pops::Loaders.new(env)) do
        loader = Puppet.lookup(:loaders).private_environment_loader
        get = loader.load(:function, 'libkv::get')
        pop = loader.load(:function, 'libkv::pop_error')
        broken = { 'url' => "file://#{tmp}/file/store", 'softfail' => true }
        Thread.new { get.call({}, '/in-a-thread', broken) }.join
        expect(pop.call({})).to be_nil
        get.call({}, '/here', broken)
        expect(pop.call({})).to include('get /here on')
        expect(pop.call({})).to be_nil
      end
    end
  end
end
