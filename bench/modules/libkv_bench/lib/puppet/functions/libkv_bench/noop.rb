# frozen_string_literal: true

# @summary Does nothing, with a typed dispatch like libkv's functions: what a
#   function call costs in Puppet alone, for the benchmarks to subtract.
Puppet::Functions.create_function(:'libkv_bench::noop') do
  # @param key A key, as libkv functions take it.
  # @param rest The other arguments, ignored.
  # @return [Undef]
  dispatch :noop do
    param 'String', :key
    repeated_param 'Any', :rest
    return_type 'Any'
  end

  def noop(_key, *_rest)
    nil
  end
end
