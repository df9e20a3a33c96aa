# frozen_string_literal: true

require_relative '../../../puppet_x/libkv/helper'

# @summary Reads a value with its sequence, for a later libkv::atomic_put or libkv::atomic_delete.
#
# @example Read a value and its sequence
#   $current = libkv::atomic_get('/app/counter')
# @raise ArgumentError for an invalid key, value or option, before any I/O
# @raise Puppet::Error when the store fails and softfail is off
Puppet::Functions.create_function(:'libkv::atomic_get') do
  # The positional form: $key, then optionally a Hash of options.
  #
  # @param key The key, like '/dir/name': A-Z a-z 0-9 . _ : - and /.
  # @param options Options, as in the README.
  # @option options [String] url Which store; default Hiera libkv::url, else 'legacy-simp6://'.
  # @option options [Variant[Hash, Sensitive[Hash]]] auth Credentials and TLS files; default Hiera libkv::auth.
  # @option options [Boolean] softfail On a store failure, warn and return a safe value; default Hiera libkv::softfail, else false.
  # @option options [Boolean] debug Log the call (function, key, store, time taken) at debug level.
  # @option options [Boolean] serialize Keep the Puppet type of values (default true).
  # @option options [Numeric] timeout Seconds for connecting and each request (default 5); default Hiera libkv::timeout.
  # @option options [String] mode SIMP libkv's option: only 'puppet', which is what libkv does.
  # @return [Libkv::Previous] {'value' => value, 'sequence' => Integer}; libkv::empty_value() when the key is absent (and with softfail when the store failed).
  dispatch :positional do
    param 'String', :key
    optional_param 'Hash', :options
    return_type 'Libkv::Previous'
  end

  # One Hash of named parameters and options, as SIMP's libkv takes them.
  #
  # @param params The same as one Hash: 'key' and any options.
  # @return [Libkv::Previous] As above.
  dispatch :named do
    param 'Hash', :params
    return_type 'Libkv::Previous'
  end

  def positional(key, options = {})
    PuppetX::Libkv.call(self, 'atomic_get', { 'key' => key }, options)
  end

  def named(params)
    PuppetX::Libkv.call_named(self, 'atomic_get', params)
  end
end
