# frozen_string_literal: true

require_relative '../../../puppet_x/libkv/helper'

# @summary The value that stands for an absent key in atomic functions.
#
# @example Create a key only if nobody else has
#   libkv::atomic_put('/app/owner', $trusted['certname'], libkv::empty_value())
Puppet::Functions.create_function(:'libkv::empty_value') do
  # No parameters.
  #
  # @return [Struct[{value => Undef, sequence => Integer[0, 0]}]] {'value' => undef, 'sequence' => 0}
  dispatch :empty_value do
    return_type 'Struct[{value => Undef, sequence => Integer[0, 0]}]'
  end

  # A Hash of options is accepted, for symmetry with the other functions, and
  # ignored.
  #
  # @param _options Ignored.
  # @return [Struct[{value => Undef, sequence => Integer[0, 0]}]] As above.
  dispatch :empty_value_ignoring_options do
    param 'Hash', :_options
    return_type 'Struct[{value => Undef, sequence => Integer[0, 0]}]'
  end

  def empty_value_ignoring_options(_options)
    empty_value
  end

  def empty_value
    PuppetX::Libkv.empty_value
  end
end
