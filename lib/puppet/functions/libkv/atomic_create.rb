# frozen_string_literal: true

require_relative '../../../puppet_x/libkv/helper'

# @summary Stores a value only if the key is absent.
#
# @example Become the holder of a lock, if nobody holds it
#   if libkv::atomic_create('/locks/db', $trusted['certname']) { notice('this node holds the lock') }
# @raise ArgumentError for an invalid key, value or option, before any I/O
# @raise Puppet::Error when the store fails and softfail is off
Puppet::Functions.create_function(:'libkv::atomic_create') do
  # The positional form: $key, $value, then optionally a Hash of options.
  #
  # @param key The key, like '/dir/name': A-Z a-z 0-9 . _ : - and /.
  # @param value The value: Undef, Boolean, Integer, Float, String, Binary, or an Array or Hash of these.
  # @param options Options, as in the README.
  # @option options [String] url Which store; default Hiera libkv::url, else 'legacy-simp6://'.
  # @option options [Variant[Hash, Sensitive[Hash]]] auth Credentials and TLS files; default Hiera libkv::auth.
  # @option options [Boolean] softfail On a store failure, warn and return a safe value; default Hiera libkv::softfail, else false.
  # @option options [Boolean] debug Log the call (function, key, store, time taken) at debug level.
  # @option options [Boolean] serialize Keep the Puppet type of values (default true).
  # @option options [Numeric] timeout Seconds for connecting and each request (default 5); default Hiera libkv::timeout.
  # @option options [String] mode SIMP libkv's option: only 'puppet', which is what libkv does.
  # @option options [Integer] ttl Seconds the key lives without another write (see the README for each store's bounds).
  # @return [Boolean] true if this call created the key, false if it existed. With softfail: false.
  dispatch :positional do
    param 'String', :key
    param 'Any', :value
    optional_param 'Hash', :options
    return_type 'Boolean'
  end

  # One Hash of named parameters and options, as SIMP's libkv takes them.
  #
  # @param params The same as one Hash: 'key', 'value' and any options.
  # @return [Boolean] As above.
  dispatch :named do
    param 'Hash', :params
    return_type 'Boolean'
  end

  def positional(key, value, options = {})
    PuppetX::Libkv.call(self, 'atomic_create', { 'key' => key, 'value' => value }, options)
  end

  def named(params)
    PuppetX::Libkv.call_named(self, 'atomic_create', params)
  end
end
