# frozen_string_literal: true

# @summary The same operations as libkv's functions, but through libkv's Ruby API
#   called straight from this function: what a call costs inside a compilation
#   without libkv's Puppet layer, for the benchmarks to compare with.
Puppet::Functions.create_function(:'libkv_bench::direct') do
  # @param op One of get, put, exists, list, atomic_get, atomic_put.
  # @param url The store.
  # @param key The key (or directory).
  # @param previous For atomic_put, what atomic_get returned.
  # @return [Any]
  dispatch :direct do
    param 'String', :op
    param 'String', :url
    param 'String', :key
    optional_param 'Hash', :previous
    return_type 'Any'
  end

  def direct(op, url, key, previous = nil)
    require 'libkv'
    store = (@stores ||= {})[url] ||= LibKV.open(url)
    case op
    when 'get' then store.get(key)
    when 'put' then store.put(key, 'v' * 64)
    when 'exists' then store.exists(key)
    when 'list' then store.list(key)
    when 'atomic_get' then store.atomic_get(key)
    when 'atomic_put' then store.atomic_put(key, 'v' * 64, previous)
    end
  end
end
