# frozen_string_literal: true

require 'json'

# @summary Writes the benchmark's measurements as JSON to the file
#   LIBKV_BENCH_OUT names.
Puppet::Functions.create_function(:'libkv_bench::report') do
  # @param results What was measured.
  # @return [Undef]
  dispatch :report do
    param 'Hash', :results
  end

  def report(results)
    File.write(ENV.fetch('LIBKV_BENCH_OUT'), JSON.generate(results))
    nil
  end
end
