# frozen_string_literal: true

require_relative '../../../puppet_x/libkv/helper'

# @summary Stores a value only if the key is unchanged since it was read with libkv::atomic_get.
#
# @example Increment a counter, if nobody changed it meanwhile
#   $current = libkv::atomic_get('/app/counter')
#   $next = $current['value'] ? { undef => 1, default => $current['value'] + 1 }
#   $stored = libkv::atomic_put('/app/counter', $next, $current)
# @raise ArgumentError for an invalid key, value or option, before any I/O
# @raise Puppet::Error when the store fails and softfail is off
Puppet::Functions.create_function(:'libkv::atomic_put') do
  # The positional form: $key, $value, $previous, then optionally a Hash of options.
  #
  # @param key The key, like '/dir/name': A-Z a-z 0-9 . _ : - and /.
  # @param value The value: Undef, Boolean, Integer, Float, String, Binary, or an Array or Hash of these.
  # @param previous What libkv::atomic_get returned for the key (libkv::empty_value() for an absent key).
  # @param options Options, as in the README.
  # @option options [String] url Which store; default Hiera libkv::url, else 'legacy-simp6://'.
  # @option options [Variant[Hash, Sensitive[Hash]]] auth Credentials and TLS files; default Hiera libkv::auth.
  # @option options [Boolean] softfail On a store failure, warn and return a safe value; default Hiera libkv::softfail, else false.
  # @option options [Boolean] debug Log the call (function, key, store, time taken) at debug level.
  # @option options [Boolean] serialize Keep the Puppet type of values (default true).
  # @option options [Numeric] timeout Seconds for connecting and each request (default 5); default Hiera libkv::timeout.
  # @option options [String] mode SIMP libkv's option: only 'puppet', which is what libkv does.
  # @option options [Integer] ttl Seconds the key lives without another write (see the README for each store's bounds).
  # @return [Boolean] true if stored; false if the key changed in between (read it again and retry). With softfail: false.
  dispatch :positional do
    param 'String', :key
    param 'Any', :value
    param 'Libkv::Previous', :previous
    optional_param 'Hash', :options
    return_type 'Boolean'
  end

  # One Hash of named parameters and options, as SIMP's libkv takes them.
  #
  # @param params The same as one Hash: 'key', 'value', 'previous' and any options.
  # @return [Boolean] As above.
  dispatch :named do
    param 'Hash', :params
    return_type 'Boolean'
  end

  def positional(key, value, previous, options = {})
    PuppetX::Libkv.call(self, 'atomic_put', { 'key' => key, 'value' => value, 'previous' => previous }, options)
  end

  def named(params)
    PuppetX::Libkv.call_named(self, 'atomic_put', params)
  end
end
