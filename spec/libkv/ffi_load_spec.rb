# frozen_string_literal: true

require 'spec_helper'
require 'open3'
require 'rbconfig'
require 'stringio'

# Loading lib/libkv/ffi.rb again, as puppetserver does when the module's lib/ and
# the gem both hold it, or after a load that failed. JRuby only: MRI loads the
# extension instead.
RSpec.describe 'lib/libkv/ffi.rb loaded again' do
  # This checkout's lib/, or the installed gem's (LIBKV_TEST_INSTALLED_GEM=1).
  lib = LibKVTest.checkout_lib || Gem::Specification.find_by_name('libkv').full_require_paths.first
  ffi_rb = File.join(lib, 'libkv', 'ffi.rb')

  before { skip 'MRI loads the extension, not lib/libkv/ffi.rb' unless RUBY_ENGINE == 'jruby' }

  # What +block+ wrote to $stderr (warnings included), with warnings on.
  def stderr_of
    captured = StringIO.new
    stderr = $stderr
    verbose = $VERBOSE
    $stderr = captured
    $VERBOSE = true
    yield
    captured.string
  ensure
    $stderr = stderr
    $VERBOSE = verbose
  end

  it 'keeps the first definition: no warning, and old and new stores work' do
    before = LibKV.open('mock://')
    before.put('/k', 1)
    warnings = stderr_of do
      load ffi_rb
      load ffi_rb
    end
    expect(warnings).to eq('')
    expect(before.get('/k')).to eq(1)
    after = LibKV.open('mock://')
    expect(after.put('/k', 'v')).to be(true)
    expect(after.get('/k')).to eq('v')
  end

  # A JRuby of its own, with warnings on: one whose first load fails (no library,
  # then a library of another version), and whose next load works.
  it 'defines nothing when a load fails, so that the next load works without a warning' do
    script = <<~RUBY
      require 'libkv/version'
      real = LibKV::VERSION
      ENV['LIBKV_FFI_LIBRARY'] = '/nonexistent/libkv_ffi.so'
      begin
        require 'libkv'
      rescue LoadError => e
        puts "missing: \#{e.message}"
      end
      ENV.delete('LIBKV_FFI_LIBRARY')
      LibKV.send(:remove_const, :VERSION)
      LibKV.const_set(:VERSION, '0.0.1')
      begin
        require 'libkv'
      rescue LoadError => e
        puts "other version: \#{e.message}"
      end
      LibKV.send(:remove_const, :VERSION)
      LibKV.const_set(:VERSION, real)
      require 'libkv'
      store = LibKV.open('mock://')
      store.put('/k', [1, 'two'])
      puts "works: \#{store.get('/k').inspect} from \#{LibKV::Native::PATH}"
    RUBY
    out, err, status = Open3.capture3({ 'LIBKV_FFI_LIBRARY' => nil }, RbConfig.ruby, '-w', '-I', lib, '-e', script)
    expect(status).to be_success, "#{out}\n#{err}"
    lines = out.lines.map(&:chomp)
    expect(lines[0]).to start_with("missing: libkv's C ABI library").and include('/nonexistent/libkv_ffi.so')
    path = lines[2][/from (.*)\z/, 1]
    expect(lines[1]).to start_with("other version: #{path} is libkv #{LibKV::VERSION} (C ABI version")
    expect(lines[1]).to include('is libkv 0.0.1')
    expect(lines[2]).to start_with('works: [1, "two"]')
    expect(err).not_to match(/already initialized|previous definition|redefin/)
    expect(err.lines.grep(/libkv/)).to eq([])
  end
end
