# frozen_string_literal: true

# @summary Does nothing, declared as libkv's functions take their arguments (a
#   key, a value, options): the floor of a libkv:: call in a compilation, for the
#   benchmarks to compare with.
Puppet::Functions.create_function(:'libkv_bench::bare') do
  # @param key A key.
  # @param value A value, or the options.
  # @param options Options.
  # @return [Undef]
  dispatch :bare do
    param 'String', :key
    optional_param 'Any', :value
    optional_param 'Optional[Hash]', :options
    return_type 'Any'
  end

  def bare(_key, _value = nil, _options = nil)
    nil
  end
end
