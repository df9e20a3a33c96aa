# frozen_string_literal: true

# @summary The monotonic clock in seconds, to time calls inside a compilation.
Puppet::Functions.create_function(:'libkv_bench::clock') do
  # @return [Float]
  dispatch :clock do
    return_type 'Float'
  end

  def clock
    Process.clock_gettime(Process::CLOCK_MONOTONIC)
  end
end
