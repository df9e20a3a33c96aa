# frozen_string_literal: true

# Specs of the Ruby API. They load the real extension (build it first with
# `rake compile`) and run against every store in LIBKV_TEST_STORES (default: all).

$LOAD_PATH.unshift(File.expand_path('../lib', __dir__))
require 'libkv'
require 'tmpdir'
require 'fileutils'

Dir[File.join(__dir__, 'support', '*.rb')].sort.each { |f| require f }

RSpec.configure do |c|
  c.disable_monkey_patching!
  c.order = :random
  c.include LibKVTest::Helpers
end
