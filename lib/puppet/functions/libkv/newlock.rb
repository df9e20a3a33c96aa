# frozen_string_literal: true

require_relative '../../../puppet_x/libkv/helper'

# @summary Takes a lock that holds until its ttl passes or libkv::unlock releases it.
#
# The lock outlives the compilation: the node whose catalog took it holds it while
# the agent applies the catalog, say, until `ttl` passes or a later run unlocks
# it. It is not renewed. For a lock around work done during the compilation,
# use libkv::with_lock.
#
# @example One node at a time restarts, for at most ten minutes each
#   $lock = libkv::newlock('/locks/app-restart', { 'ttl' => 600, 'timeout' => 0, 'softfail' => true })
#   if $lock { notify { "restarting under lock ${lock['fence']}": } }
# @raise ArgumentError for an invalid key or option, before any I/O
# @raise Puppet::Error when the lock is not taken within the timeout, or the store fails (softfail off)
Puppet::Functions.create_function(:'libkv::newlock') do
  # @param key The lock's key, like '/locks/name'.
  # @param options Options, as in the README.
  # @option options [Integer] ttl Seconds the store keeps the lock (default 60; see the README for each store's bounds).
  # @option options [Numeric] timeout Seconds to wait while another holds it (default 30; 0: one try).
  # @option options [String] url Which store; default Hiera libkv::url, else 'legacy-simp6://'.
  # @option options [Variant[Hash, Sensitive[Hash]]] auth Credentials and TLS files; default Hiera libkv::auth.
  # @option options [Boolean] softfail When the lock is not taken or the store fails, warn and return undef.
  # @option options [Boolean] debug Log the call (function, key, store, time taken) at debug level.
  # @return [Optional[Libkv::Lock]] The lock: key, owner, fence, ttl. With softfail: undef when not taken.
  dispatch :positional do
    param 'String', :key
    optional_param 'Hash', :options
    return_type 'Optional[Libkv::Lock]'
  end

  def positional(key, options = {})
    PuppetX::Libkv.call(self, 'newlock', { 'key' => key }, options)
  end
end
