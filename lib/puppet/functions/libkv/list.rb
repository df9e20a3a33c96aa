# frozen_string_literal: true

require_relative '../../../puppet_x/libkv/helper'

# @summary Reads every key below a directory.
#
# @example Every key below a directory
#   $hosts = libkv::list('/app/hosts')  # { 'web01.example.com' => '10.0.0.1', 'db/primary' => '10.0.0.2' }
# @raise ArgumentError for an invalid key, value or option, before any I/O
# @raise Puppet::Error when the store fails and softfail is off
Puppet::Functions.create_function(:'libkv::list') do
  # The positional form: $key, the directory, then optionally a Hash of options.
  #
  # @param key The directory, like '/dir' or '/'.
  # @param options Options, as in the README.
  # @option options [String] url Which store; default Hiera libkv::url, else 'legacy-simp6://'.
  # @option options [Variant[Hash, Sensitive[Hash]]] auth Credentials and TLS files; default Hiera libkv::auth.
  # @option options [Boolean] softfail On a store failure, warn and return a safe value; default Hiera libkv::softfail, else false.
  # @option options [Boolean] debug Log the call (function, key, store, time taken) at debug level.
  # @option options [Boolean] serialize Keep the Puppet type of values (default true).
  # @option options [Numeric] timeout Seconds for connecting and each request (default 5); default Hiera libkv::timeout.
  # @option options [String] mode SIMP libkv's option: only 'puppet', which is what libkv does.
  # @return [Hash] Each key below the directory, relative to it, with its value. With softfail: {}.
  dispatch :positional do
    param 'String', :key
    optional_param 'Hash', :options
    return_type 'Hash'
  end

  # One Hash of named parameters and options, as SIMP's libkv takes them.
  #
  # @param params The same as one Hash: 'key' (the directory, as in SIMP's libkv) and any options.
  # @return [Hash] As above.
  dispatch :named do
    param 'Hash', :params
    return_type 'Hash'
  end

  def positional(key, options = {})
    PuppetX::Libkv.call(self, 'list', { 'key' => key }, options)
  end

  def named(params)
    PuppetX::Libkv.call_named(self, 'list', params)
  end
end
