# frozen_string_literal: true

# @summary The time, in seconds: 'monotonic' (comparable between the JRuby
#   instances of one puppetserver: one JVM) and 'wall' (since the epoch).
Puppet::Functions.create_function(:'libkv_e2e::clock') do
  dispatch :clock do
    return_type 'Hash[String, Float]'
  end

  def clock
    { 'monotonic' => Process.clock_gettime(Process::CLOCK_MONOTONIC), 'wall' => Time.now.to_f }
  end
end
