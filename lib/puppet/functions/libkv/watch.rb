# frozen_string_literal: true

require_relative '../../../puppet_x/libkv/helper'

# @summary Waits until a key changes (at most `timeout` seconds), and returns it as libkv::atomic_get does.
#
# The key has changed when its sequence differs from `previous`'s: what
# libkv::atomic_get returned (or its sequence); by default, the key as the call
# starts. A key that differs already returns at once. The wait holds up the
# catalog's compilation, for at most `timeout` seconds (default 30): meant for a
# manifest that waits for another node to publish something.
#
# @example Wait up to a minute for the database node to publish its address
#   $db = libkv::watch('/app/db_address', { 'previous' => libkv::empty_value(), 'timeout' => 60 })
#   if $db['sequence'] == 0 { fail('the database has not published its address yet') }
# @raise ArgumentError for an invalid key or option, before any I/O
# @raise Puppet::Error when the store fails and softfail is off
Puppet::Functions.create_function(:'libkv::watch') do
  # The positional form: $key, then optionally a Hash of options.
  #
  # @param key The key, like '/dir/name'.
  # @param options Options, as in the README.
  # @option options [Variant[Libkv::Previous, Integer]] previous What the change is from (default: the key as the call starts).
  # @option options [Numeric] timeout Seconds to wait for a change (default 30).
  # @option options [String] url Which store; default Hiera libkv::url, else 'legacy-simp6://'.
  # @option options [Variant[Hash, Sensitive[Hash]]] auth Credentials and TLS files; default Hiera libkv::auth.
  # @option options [Boolean] softfail On a store failure, warn and return libkv::empty_value(); default Hiera libkv::softfail, else false.
  # @option options [Boolean] debug Log the call (function, key, store, time taken) at debug level.
  # @option options [Boolean] serialize Keep the Puppet type of values (default true).
  # @return [Libkv::Previous] {'value' => value, 'sequence' => Integer}: the changed key, or the unchanged one at the timeout; libkv::empty_value() when absent.
  dispatch :positional do
    param 'String', :key
    optional_param 'Hash', :options
    return_type 'Libkv::Previous'
  end

  # One Hash of named parameters and options.
  #
  # @param params The same as one Hash: 'key' and any options.
  # @return [Libkv::Previous] As above.
  dispatch :named do
    param 'Hash', :params
    return_type 'Libkv::Previous'
  end

  def positional(key, options = {})
    PuppetX::Libkv.call(self, 'watch', { 'key' => key }, options)
  end

  def named(params)
    PuppetX::Libkv.call_named(self, 'watch', params)
  end
end
