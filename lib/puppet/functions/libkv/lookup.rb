# frozen_string_literal: true

require_relative '../../../puppet_x/libkv/hiera'

# @summary A Hiera 5 lookup_key backend: Hiera data from a libkv store.
#
# Hiera calls it; manifests do not. The Hiera key is read at PREFIX/KEY (under the
# prefix /hiera, `app::port` is the libkv key `/hiera/app::port`) with the type it
# was stored with; a key the store does not hold, or that is not a valid libkv key,
# is not found, and Hiera goes on to the next level. `lookup_options` and `libkv::*`
# keys are never read from a store. Each key is read at most once per compilation.
#
# @example hiera.yaml
#   ---
#   version: 5
#   hierarchy:
#     - name: "Per-node data in etcd"
#       lookup_key: libkv::lookup
#       options:
#         url: "etcd://127.0.0.1:2379/puppet"
#         prefix: "/hiera/%{trusted.certname}"
#         confine_to_keys: ['^app::']
#     - name: "Common data"
#       path: "common.yaml"
#       data_hash: yaml_data
Puppet::Functions.create_function(:'libkv::lookup') do
  # @param key The Hiera key.
  # @param options The level's options in hiera.yaml.
  # @option options [String] url Which store; default Hiera libkv::url, else 'legacy-simp6://'.
  # @option options [Hash] auth Credentials and TLS files; default Hiera libkv::auth.
  # @option options [Numeric] timeout Seconds for connecting and each request (default 5); default Hiera libkv::timeout.
  # @option options [String] prefix Where the keys live, like '/hiera/%{trusted.certname}' (Hiera interpolation); default '' (the key /KEY).
  # @option options [Boolean] softfail On a store failure, warn once and fall through to the next level (default true).
  # @option options [Array[String]] confine_to_keys Regular expressions: only keys matching one are read from the store.
  # @param context Hiera's lookup context.
  # @return [Any] The value, with the type it was stored with.
  dispatch :lookup_key do
    param 'Variant[String, Numeric]', :key
    param 'Hash', :options
    param 'Puppet::LookupContext', :context
  end

  def lookup_key(key, options, context)
    PuppetX::Libkv::Hiera.lookup_key(self, key, options, context)
  end
end
