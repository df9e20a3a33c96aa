# frozen_string_literal: true

require_relative '../../../puppet_x/libkv/helper'

# @summary The value that stands for an absent key in atomic functions.
#
# @example Create a key only if nobody else has
#   libkv::atomic_put('/app/owner', $trusted['certname'], libkv::empty_value())
Puppet::Functions.create_function(:'libkv::empty_value') do
  # @param options Accepted for symmetry with the other functions; ignored.
  # @return [Struct[{value => Undef, sequence => Integer[0, 0]}]] {'value' => undef, 'sequence' => 0}
  dispatch :empty_value do
    optional_param 'Optional[Hash]', :options
    return_type 'Struct[{value => Undef, sequence => Integer[0, 0]}]'
  end

  def empty_value(_options = {})
    PuppetX::Libkv.empty_value
  end
end
