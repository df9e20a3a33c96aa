# frozen_string_literal: true

require_relative '../../../puppet_x/libkv/helper'

# @summary Waits until anything below a directory changes (at most `timeout` seconds), and returns it as libkv::atomic_list does.
#
# Something has changed when a key below the directory was added, removed, or
# has another sequence than in `previous`: what libkv::atomic_list returned; by
# default, the directory as the call starts. The wait holds up the catalog's
# compilation, for at most `timeout` seconds (default 30).
#
# @example Wait up to two minutes for a third node to join
#   $members = libkv::atomic_list('/cluster/members')
#   $now = if length($members) < 3 { libkv::watchtree('/cluster/members', { 'previous' => $members, 'timeout' => 120 }) } else { $members }
# @raise ArgumentError for an invalid directory or option, before any I/O
# @raise Puppet::Error when the store fails and softfail is off
Puppet::Functions.create_function(:'libkv::watchtree') do
  # The positional form: $dir, then optionally a Hash of options.
  #
  # @param dir The directory, like '/dir'.
  # @param options Options, as in the README.
  # @option options [Hash[String, Libkv::Previous]] previous What the change is from: what libkv::atomic_list returned (default: the directory as the call starts).
  # @option options [Numeric] timeout Seconds to wait for a change (default 30).
  # @option options [String] url Which store; default Hiera libkv::url, else 'legacy-simp6://'.
  # @option options [Variant[Hash, Sensitive[Hash]]] auth Credentials and TLS files; default Hiera libkv::auth.
  # @option options [Boolean] softfail On a store failure, warn and return {}; default Hiera libkv::softfail, else false.
  # @option options [Boolean] debug Log the call (function, key, store, time taken) at debug level.
  # @option options [Boolean] serialize Keep the Puppet type of values (default true).
  # @return [Hash[String, Libkv::Previous]] Key relative to the directory => {'value' => value, 'sequence' => Integer}, as it is after the change, or at the timeout.
  dispatch :positional do
    param 'String', :dir
    optional_param 'Hash', :options
    return_type 'Hash[String, Libkv::Previous]'
  end

  # One Hash of named parameters and options.
  #
  # @param params The same as one Hash: 'key' (the directory) and any options.
  # @return [Hash[String, Libkv::Previous]] As above.
  dispatch :named do
    param 'Hash', :params
    return_type 'Hash[String, Libkv::Previous]'
  end

  def positional(dir, options = {})
    PuppetX::Libkv.call(self, 'watchtree', { 'key' => dir }, options)
  end

  def named(params)
    PuppetX::Libkv.call_named(self, 'watchtree', params)
  end
end
