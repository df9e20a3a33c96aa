# frozen_string_literal: true

require_relative '../../../puppet_x/libkv/helper'

# @summary Deletes a key.
#
# @example
#   libkv::delete('/app/port')
Puppet::Functions.create_function(:'libkv::delete') do
  # @param key The key, like '/dir/name': A-Z a-z 0-9 . _ : - and /.
  # @param options Options, as in the README.
  # @option options [String] url Which store; default Hiera libkv::url, else 'legacy-simp6://'.
  # @option options [Hash] auth Credentials and TLS files; default Hiera libkv::auth.
  # @option options [Boolean] softfail On a store failure, warn and return a safe value; default Hiera libkv::softfail, else false.
  # @option options [Boolean] debug Log the call (function, key, store, time taken) at debug level.
  # @option options [Boolean] serialize Keep the Puppet type of values (default true).
  # @option options [Numeric] timeout Seconds for connecting and each request (default 5); default Hiera libkv::timeout.
  # @return [Boolean] true, also when the key was absent. With softfail: false when the store failed.
  # @raise [ArgumentError] for an invalid key, value or option
  # @raise [Puppet::Error] when the store fails and softfail is off
  dispatch :positional do
    param 'String', :key
    optional_param 'Optional[Hash]', :options
    return_type 'Boolean'
  end

  # @param params The same as one Hash: 'key' and any options.
  # @return [Boolean] As above.
  dispatch :named do
    param 'Hash', :params
    return_type 'Boolean'
  end

  def positional(key, options = {})
    PuppetX::Libkv.call(self, 'delete', { 'key' => key }, options)
  end

  def named(params)
    PuppetX::Libkv.call_named(self, 'delete', params)
  end
end
