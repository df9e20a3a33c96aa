# frozen_string_literal: true

require_relative '../../../puppet_x/libkv/helper'

# @summary Names the store's provider.
#
# @example
#   notice(libkv::provider())
Puppet::Functions.create_function(:'libkv::provider') do
  # @param options Options, as in the README.
  # @option options [String] url Which store; default Hiera libkv::url, else 'legacy-simp6://'.
  # @option options [Hash] auth Credentials and TLS files; default Hiera libkv::auth.
  # @option options [Boolean] softfail On a store failure, warn and return a safe value; default Hiera libkv::softfail, else false.
  # @option options [Boolean] debug Log the call (function, key, store, time taken) at debug level.
  # @option options [Boolean] serialize Keep the Puppet type of values (default true).
  # @option options [Numeric] timeout Seconds for connecting and each request (default 5); default Hiera libkv::timeout.
  # @return [Optional[String]] 'mock', 'file', 'legacy-simp6', 'consul' or 'etcd'. With softfail: undef when the store cannot be opened.
  # @raise [ArgumentError] for an invalid key, value or option
  # @raise [Puppet::Error] when the store fails and softfail is off
  dispatch :positional do
    optional_param 'Optional[Hash]', :options
    return_type 'Optional[String]'
  end

  def positional(options = {})
    PuppetX::Libkv.call(self, 'provider', {}, options)
  end
end
