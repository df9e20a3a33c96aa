# frozen_string_literal: true

# @summary Which Ruby compiles this catalog: its engine, an id of its interpreter
#   instance (puppetserver runs several JRuby instances in one JVM), and the C ABI
#   library libkv loaded there, if any.
Puppet::Functions.create_function(:'libkv_e2e::runtime') do
  dispatch :runtime do
    return_type 'Hash[String, String]'
  end

  def runtime
    require 'securerandom'
    require 'libkv'
    # Globals belong to one interpreter instance: each gets an id of its own. (JRuby
    # makes it a BINARY Ruby String, which a catalog would carry as a Binary.)
    $libkv_e2e_instance ||= SecureRandom.uuid.dup.force_encoding(Encoding::UTF_8) # rubocop:disable Style/GlobalVars
    library = defined?(LibKV::Native::PATH) ? LibKV::Native::PATH : 'none'
    { 'engine' => RUBY_ENGINE, 'version' => RUBY_VERSION, 'instance' => $libkv_e2e_instance, # rubocop:disable Style/GlobalVars
      'library' => library }
  end
end
