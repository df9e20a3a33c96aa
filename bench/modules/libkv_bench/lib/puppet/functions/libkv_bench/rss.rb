# frozen_string_literal: true

# @summary This process's resident set size, in KiB (VmRSS).
Puppet::Functions.create_function(:'libkv_bench::rss') do
  # @return [Integer]
  dispatch :rss do
    return_type 'Integer'
  end

  def rss
    File.read('/proc/self/status')[/^VmRSS:\s+(\d+)/, 1].to_i
  end
end
