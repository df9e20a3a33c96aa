# frozen_string_literal: true

# Specs of the Puppet functions, with rspec-puppet, through the real extension.
# The repository root is the module: a temp modulepath links to it as libkv (kept
# outside spec/, where rspec would follow the link and load every spec twice).

require_relative 'spec_helper'
require 'rspec-puppet'
require 'puppet/test/test_helper'

Dir[File.join(__dir__, 'shared', '*.rb')].sort.each { |f| require f }

modules = Dir.mktmpdir('libkv-modules')
File.symlink(File.expand_path('..', __dir__), File.join(modules, 'libkv'))
at_exit { FileUtils.rm_rf(modules) }

RSpec.configure do |c|
  c.module_path = modules
  c.manifest = File.join(__dir__, 'fixtures-static', 'site.pp')
  c.include LibKVTest::FunctionHelpers, file_path: %r{spec/functions/}

  # Puppet's log messages of each example, at every level, in @logs.
  c.before(:each) do
    @logs = []
    Puppet::Util::Log.newdestination(Puppet::Test::LogCollector.new(@logs))
    Puppet::Util::Log.level = :debug
  end
  c.after(:each) do
    Puppet::Util::Log.close_all
    Puppet::Util::Log.level = :notice
  end
end
