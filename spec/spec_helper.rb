# frozen_string_literal: true

# Specs of the Ruby API. They load the real extension (build it first with
# `rake compile`) and run against every store in LIBKV_TEST_STORES (default: all).
# With LIBKV_TEST_INSTALLED_GEM=1 they load the installed libkv gem instead of
# this checkout's lib/ (the prebuilt gems, in a Debian root with no compiler).

$LOAD_PATH.unshift(File.expand_path('../lib', __dir__)) unless ENV['LIBKV_TEST_INSTALLED_GEM'] == '1'
require 'libkv'
require 'tmpdir'
require 'fileutils'

Dir[File.join(__dir__, 'support', '*.rb')].sort.each { |f| require f }

RSpec.configure do |c|
  c.disable_monkey_patching!
  c.order = :random
  c.include LibKVTest::Helpers
end
