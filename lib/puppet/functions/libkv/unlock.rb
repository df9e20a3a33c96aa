# frozen_string_literal: true

require_relative '../../../puppet_x/libkv/helper'

# @summary Releases a lock libkv::newlock took, in this compilation or an earlier one.
#
# @example
#   $lock = libkv::newlock('/locks/app-restart', { 'ttl' => 600 })
#   libkv::unlock($lock)
# @raise ArgumentError for an invalid lock or option, before any I/O
# @raise Puppet::Error when the store fails and softfail is off
Puppet::Functions.create_function(:'libkv::unlock') do
  # @param lock What libkv::newlock returned.
  # @param options Options, as in the README (url and auth: the store the lock was taken on).
  # @option options [String] url Which store; default Hiera libkv::url, else 'legacy-simp6://'.
  # @option options [Variant[Hash, Sensitive[Hash]]] auth Credentials and TLS files; default Hiera libkv::auth.
  # @option options [Boolean] softfail On a store failure, warn and return false.
  # @option options [Boolean] debug Log the call (function, key, store, time taken) at debug level.
  # @option options [Numeric] timeout Seconds for connecting and each request (default 5); default Hiera libkv::timeout.
  # @return [Boolean] true if released; false if the lock had expired or another holds it now.
  dispatch :positional do
    param 'Libkv::Lock', :lock
    optional_param 'Hash', :options
    return_type 'Boolean'
  end

  def positional(lock, options = {})
    PuppetX::Libkv.call(self, 'unlock', { 'lock' => lock }, options)
  end
end
