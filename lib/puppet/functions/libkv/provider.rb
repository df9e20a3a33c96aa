# frozen_string_literal: true

require_relative '../../../puppet_x/libkv/helper'

# @summary Names the store's provider.
#
# @example Show the store's provider
#   notice(libkv::provider())
# @raise ArgumentError for an invalid key, value or option, before any I/O
# @raise Puppet::Error when the store fails and softfail is off
Puppet::Functions.create_function(:'libkv::provider') do
  # The store Hiera libkv::url names, else the default store.
  #
  # @return [Optional[String]] 'mock', 'file', 'legacy-simp6', 'consul', 'etcd', 'zookeeper' or 'sqlite'. With softfail: undef when the store cannot be opened.
  dispatch :default_store do
    return_type 'Optional[String]'
  end

  # The store a Hash of options chooses.
  #
  # @param options Options, as in the README.
  # @option options [String] url Which store; default Hiera libkv::url, else 'legacy-simp6://'.
  # @option options [Variant[Hash, Sensitive[Hash]]] auth Credentials and TLS files; default Hiera libkv::auth.
  # @option options [Boolean] softfail On a store failure, warn and return a safe value; default Hiera libkv::softfail, else false.
  # @option options [Boolean] debug Log the call (function, key, store, time taken) at debug level.
  # @option options [Boolean] serialize Keep the Puppet type of values (default true).
  # @option options [Numeric] timeout Seconds for connecting and each request (default 5); default Hiera libkv::timeout.
  # @option options [String] mode SIMP libkv's option: only 'puppet', which is what libkv does.
  # @return [Optional[String]] As above.
  dispatch :positional do
    param 'Hash', :options
    return_type 'Optional[String]'
  end

  def default_store
    positional({})
  end

  def positional(options)
    PuppetX::Libkv.call(self, 'provider', {}, options)
  end
end
