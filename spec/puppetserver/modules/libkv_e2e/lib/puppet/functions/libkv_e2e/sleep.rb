# frozen_string_literal: true

# @summary Sleeps, so a manifest can poll without spinning.
Puppet::Functions.create_function(:'libkv_e2e::sleep') do
  dispatch :sleep_for do
    param 'Float[0.0, 1.0]', :seconds
  end

  def sleep_for(seconds)
    sleep(seconds)
    nil
  end
end
