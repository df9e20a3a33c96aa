# frozen_string_literal: true

# The stores the specs run against. Each backend gives, for a temp directory, the
# options of a fresh empty store, and (when the store can fail) of a broken one.
# LIBKV_TEST_STORES=mock,file selects some; by default all run.
module LibKVTest
  Backend = Struct.new(:name, :fresh, :broken)

  @backends = {}

  class << self
    # @param fresh [Proc] tmp -> { url:, auth:, vardir: } of a new, empty store
    # @param broken [Proc, nil] tmp -> the same for a store whose every call fails
    def register(name, fresh:, broken: nil)
      @backends[name] = Backend.new(name, fresh, broken)
    end

    def backends
      names = ENV.fetch('LIBKV_TEST_STORES', '').split(',').map(&:strip).reject(&:empty?)
      return @backends.values if names.empty?

      unknown = names - @backends.keys
      raise "unknown store in LIBKV_TEST_STORES: #{unknown.join(', ')} (known: #{@backends.keys.join(', ')})" unless unknown.empty?

      names.map { |n| @backends.fetch(n) }
    end
  end

  register('mock', fresh: ->(_tmp) { { url: 'mock://', auth: {} } })

  register('file',
           fresh: ->(tmp) { { url: "file://#{tmp}/store", auth: {} } },
           broken: lambda { |tmp|
             File.write(File.join(tmp, 'a-file'), '')
             { url: "file://#{tmp}/a-file/store", auth: {} }
           })

  register('legacy-simp6',
           fresh: ->(tmp) { { url: 'legacy-simp6://', auth: {}, vardir: File.join(tmp, 'vardir') } },
           broken: lambda { |tmp|
             File.write(File.join(tmp, 'vardir'), '')
             { url: 'legacy-simp6://', auth: {}, vardir: File.join(tmp, 'vardir') }
           })
end
