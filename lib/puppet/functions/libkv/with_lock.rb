# frozen_string_literal: true

require_relative '../../../puppet_x/libkv/helper'

# @summary Runs a block holding a lock, and releases it.
#
# The lock is renewed while the block runs. When it was lost meanwhile (the
# compilation stalled past its ttl, the store was unreachable), another holder
# may have run at the same time: the call fails once the block returns (with
# softfail: returns undef, and libkv::pop_error says why).
#
# @example Generate a shared secret once, whichever node compiles first
#   $secret = libkv::with_lock('/locks/app-secret') || {
#     $found = libkv::get('/app/secret')
#     if $found { $found } else { $new = fqdn_rand_string(32); libkv::put('/app/secret', $new); $new }
#   }
# @raise ArgumentError for an invalid key or option, before any I/O
# @raise Puppet::Error when the lock is not taken within the timeout, was lost, or the store fails (softfail off)
Puppet::Functions.create_function(:'libkv::with_lock') do
  # @param key The lock's key, like '/locks/name'.
  # @param options Options, as in the README.
  # @option options [Integer] ttl Seconds the store keeps the lock between renewals (default 60).
  # @option options [Numeric] timeout Seconds to wait while another holds it (default 30; 0: one try).
  # @option options [String] url Which store; default Hiera libkv::url, else 'legacy-simp6://'.
  # @option options [Variant[Hash, Sensitive[Hash]]] auth Credentials and TLS files; default Hiera libkv::auth.
  # @option options [Boolean] softfail When the lock is not taken, is lost or the store fails, warn and return undef.
  # @option options [Boolean] debug Log the call (function, key, store, time taken) at debug level.
  # @param block Run holding the lock, given the lock (key, owner, fence, ttl).
  # @return [Any] What the block returned. With softfail: undef when the lock was not taken or was lost.
  dispatch :given_the_lock do
    param 'String', :key
    optional_param 'Hash', :options
    block_param 'Callable[1, 1]', :block
  end

  # The same with a block that takes no parameter.
  #
  # @param key The lock's key, like '/locks/name'.
  # @param options Options, as above.
  # @param block Run holding the lock.
  # @return [Any] What the block returned. With softfail: undef when the lock was not taken or was lost.
  dispatch :plain do
    param 'String', :key
    optional_param 'Hash', :options
    block_param 'Callable[0, 0]', :block
  end

  def given_the_lock(key, options = {}, &block)
    PuppetX::Libkv.call(self, 'with_lock', { 'key' => key }, options) { |lock| block.call(lock) }
  end

  def plain(key, options = {}, &block)
    PuppetX::Libkv.call(self, 'with_lock', { 'key' => key }, options) { |_lock| block.call }
  end
end
