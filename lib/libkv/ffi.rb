# frozen_string_literal: true

# The binding of libkv for Rubies that cannot load the MRI extension, such as
# puppetserver's JRuby: the same Rust core, compiled as a C ABI library
# (crates/libkv-ffi), called through FFI. This file only marshals: Ruby values to
# the envelope DATA JSON the library takes (see crates/libkv-ffi/src/lib.rs) and
# back, and the library's errors to the exceptions of libkv/errors.rb. It defines
# what ext/libkv defines on MRI: LibKV::Store._open, the store's underscored
# methods, provider, url, supports, info, LibKV::Lock's and LibKV::Watch's methods, and
# LibKV.binary_inside?.
#
# Puppet reloads function files on every compile, and a module's lib/ and the gem
# may both hold this file: loaded again, it keeps the first definition. The guard
# is Native::PATH, defined once the library is found and checked and before
# anything else: until then this file defines nothing (no constant, no method, no
# struct layout), so a load that failed there (no library, another version) leaves
# nothing behind, and the next load tries again from the start.
return if defined?(LibKV::Native::PATH)

require 'ffi'
require 'json'
require 'libkv/version'
require 'libkv/errors'
# In this order: the library (found and checked first: should that fail, nothing
# else is defined), the values, the store, its locks.
require_relative 'ffi/native'
require_relative 'ffi/data'
require_relative 'ffi/store'
require_relative 'ffi/lock'
require_relative 'ffi/watch'
