# frozen_string_literal: true

require_relative '../../../puppet_x/libkv/helper'

# @summary The message of the last libkv call that failed softly in this compilation.
#
# Calls with `softfail => true` return a safe value when the store fails; this
# returns why, once, and forgets it. Each catalog compilation has its own: a
# failure while compiling one node's catalog is never another node's.
#
# @example
#   $value = libkv::get('/app/port', { 'softfail' => true })
#   $why = libkv::pop_error()
#   if $why { warning("libkv: ${why}") }
Puppet::Functions.create_function(:'libkv::pop_error') do
  # @param options Accepted for symmetry with the other functions; ignored.
  # @return [Optional[String]] The message, or undef when no call failed since the last pop_error.
  dispatch :pop_error do
    optional_param 'Optional[Hash]', :options
    return_type 'Optional[String]'
  end

  def pop_error(_options = {})
    PuppetX::Libkv.pop_error(self)
  end
end
