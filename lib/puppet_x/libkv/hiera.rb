# frozen_string_literal: true

require_relative 'helper'

module PuppetX
  module Libkv
    # The Hiera 5 lookup_key backend libkv::lookup: a Hiera key is read from a
    # libkv store, under a prefix, with the type it was stored with.
    #
    # Each libkv key is read at most once per compilation: the answer, found or
    # not, is kept in the hierarchy level's cache, which lives as long as the
    # compilation. A store that fails is remembered for the compilation: with
    # softfail (the default) one warning, then every later key of that store falls
    # through to the next level at once, without waiting on the store again.
    #
    # Loaded by puppetserver's JRuby too: stays Ruby 2.6 compatible.
    module Hiera
      # The options of a hierarchy level, beside what Hiera itself adds.
      OPTION_TYPES = {
        'url' => Libkv::OPTION_TYPES['url'],
        'auth' => Libkv::OPTION_TYPES['auth'],
        'timeout' => Libkv::OPTION_TYPES['timeout'],
        'softfail' => 'Boolean',
        'prefix' => 'Pattern[/\A(\/|(\/[^\/]+)*)\z/]',
        'confine_to_keys' => 'Array[String[1]]',
      }.freeze

      # What the store options of a level pass to the functions' option resolution.
      STORE_OPTIONS = %w[url auth timeout].freeze

      # Hiera keys the backend never reads: Hiera's own, and libkv's settings
      # (looking them up in the store the settings name would be circular).
      RESERVED = /\A(lookup_options\z|libkv::)/.freeze

      # The cache entry of a key the store does not hold.
      ABSENT = :libkv_absent
      # The cache entry of the checked options.
      SETUP = :libkv_setup

      Setup = Struct.new(:store_options, :softfail, :prefix, :confine)

      class << self
        def lookup_key(func, key, options, context)
          key = key.to_s
          if key.match?(RESERVED)
            context.explain { "libkv::lookup never reads '#{key}' from a store" }
            context.not_found
          end
          setup = setup_of(options, context)
          unless setup.confine.nil? || setup.confine.any? { |re| re.match?(key) }
            context.explain { "'#{key}' matches none of confine_to_keys: not read from the store" }
            context.not_found
          end
          libkv_key = libkv_key(setup, key, context)
          cached(context, libkv_key) { read(func, setup, key, libkv_key, context) }
        end

        private

        # The options, checked once per hierarchy level and compilation.
        def setup_of(options, context)
          return context.cached_value(SETUP) if context.cache_has_key(SETUP)

          given = options.reject { |k, v| v.nil? || %w[path uri].include?(k) }
          Libkv.assert_type('libkv::lookup options in hiera.yaml', options_type, given)
          confine = given['confine_to_keys'] && given['confine_to_keys'].map { |re| regexp(re) }
          softfail = given.key?('softfail') ? given['softfail'] : true
          setup = Setup.new(given.select { |k, _| STORE_OPTIONS.include?(k) }.freeze, softfail,
                            given['prefix'] || '', confine)
          context.cache(SETUP, setup)
        end

        def options_type
          @options_type ||= Libkv.parse_type(Libkv.struct(OPTION_TYPES.map { |o, t| ["Optional[#{o}]", t] }))
        end

        def regexp(source)
          Regexp.new(source)
        rescue RegexpError => e
          raise ArgumentError, "libkv::lookup: confine_to_keys holds #{source.inspect}, not a regular expression: #{e.message}"
        end

        # The prefix, interpolated (/hiera/%{trusted.certname}), then '/' and the
        # Hiera key as it is. A prefix whose interpolation left a part empty
        # (an unknown fact) gives a key that is not valid, so not a key of another
        # node's level.
        def libkv_key(setup, key, context)
          prefix = setup.prefix.empty? ? '' : context.interpolate(setup.prefix)
          prefix == '/' ? "/#{key}" : "#{prefix}/#{key}"
        end

        def cached(context, libkv_key)
          if context.cache_has_key(libkv_key)
            value = context.cached_value(libkv_key)
            context.explain { "#{libkv_key}: read earlier in this compilation" }
          else
            value = context.cache(libkv_key, yield)
          end
          context.not_found if value.equal?(ABSENT)
          value
        end

        # The value at +libkv_key+, or ABSENT. One round trip to the store.
        def read(func, setup, key, libkv_key, context)
          opts, store = Libkv.store_for_options(func, setup.store_options)
          failed = failed_stores(func, context)
          where = [opts['url'], opts['auth']]
          if failed.key?(where)
            context.explain { "#{store.url} failed earlier in this compilation: #{failed[where]}" }
            return ABSENT
          end
          begin
            found = store.atomic_get(libkv_key)
          rescue ::LibKV::InvalidArgumentError
            context.explain { "'#{key}' under the prefix is #{libkv_key.inspect}, not a valid libkv key" }
            return ABSENT
          rescue ::LibKV::StoreError => e
            return failure(func, setup, store, key, e, failed, where, context)
          end
          if found['sequence'].zero?
            context.explain { "#{libkv_key} is not in #{store.url}" }
            return ABSENT
          end
          context.explain { "#{libkv_key} read from #{store.url}" }
          Libkv.from_libkv(found['value'])
        end

        def failure(func, setup, store, key, error, failed, where, context)
          Libkv.forget_store(func, store)
          message = "libkv::lookup of '#{key}': #{error.message}"
          raise Puppet::DataBinding::LookupError, message unless setup.softfail

          failed[where] = message
          Libkv.remember_failure(func, message)
          Puppet.warning("#{message} (softfail: this compilation's lookups in #{store.url} fall through " \
                         'to the next hierarchy level)')
          context.explain { message }
          ABSENT
        end

        # The stores found failing in this compilation (in the level's cache when
        # there is no compilation).
        def failed_stores(func, context)
          state = Libkv.compile_state(func)
          return state.failed_stores if state

          context.cache(:libkv_failed, {}) unless context.cache_has_key(:libkv_failed)
          context.cached_value(:libkv_failed)
        end
      end
    end
  end
end
