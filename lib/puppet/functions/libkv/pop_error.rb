# frozen_string_literal: true

require_relative '../../../puppet_x/libkv/helper'

# @summary The message of the last libkv call that failed softly in this compilation.
#
# Calls with `softfail => true` return a safe value when the store fails; this
# returns why, once, and forgets it. Each catalog compilation has its own: a
# failure while compiling one node's catalog is never another node's.
#
# @example Say why a soft-failed call returned its safe value
#   $value = libkv::get('/app/port', { 'softfail' => true })
#   $why = libkv::pop_error()
#   if $why { warning("libkv: ${why}") }
Puppet::Functions.create_function(:'libkv::pop_error') do
  # No parameters.
  #
  # @return [Optional[String]] The message, or undef when no call failed since the last pop_error.
  dispatch :pop_error do
    return_type 'Optional[String]'
  end

  # A Hash of options is accepted, for symmetry with the other functions, and
  # ignored.
  #
  # @param _options Ignored.
  # @return [Optional[String]] As above.
  dispatch :pop_error_ignoring_options do
    param 'Hash', :_options
    return_type 'Optional[String]'
  end

  def pop_error_ignoring_options(_options)
    pop_error
  end

  def pop_error
    PuppetX::Libkv.pop_error(self)
  end
end
