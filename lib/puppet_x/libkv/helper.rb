# frozen_string_literal: true

require 'libkv'

module PuppetX
  # What every libkv:: Puppet function shares: options (call arguments, then Hiera,
  # then defaults), the store cache, Puppet values to libkv values and back,
  # softfail, debug logging and error messages. The function files only declare
  # their dispatches and call Libkv.call.
  #
  # Loaded by puppetserver's JRuby too: stays Ruby 2.6 compatible.
  module Libkv
    DEFAULT_URL = 'legacy-simp6://'

    # Options every function takes, with their Puppet types. Each may also be
    # undef, which means its default. `mode` is SIMP libkv's, whose only working
    # value, 'puppet', is what libkv does.
    OPTION_TYPES = {
      'url' => 'String[1]',
      'auth' => 'Variant[Hash[String[1], Variant[String, Sensitive[String]]], Sensitive[Hash[String[1], String]]]',
      'softfail' => 'Boolean',
      'debug' => 'Boolean',
      'serialize' => 'Boolean',
      'timeout' => "Variant[Integer[1, #{::LibKV::MAX_TIMEOUT.to_i}], Float[0.001, #{::LibKV::MAX_TIMEOUT}]]",
      'mode' => 'String',
    }.freeze

    # Options with a Hiera default, looked up as libkv::<name>.
    HIERA_OPTIONS = %w[url auth softfail timeout].freeze

    PARAM_TYPES = {
      'key' => 'String',
      'value' => 'Any',
      'previous' => 'Libkv::Previous', # types/previous.pp
      'lock' => 'Libkv::Lock', # types/lock.pp
    }.freeze

    # Options of some functions only, beside OPTION_TYPES. For newlock and
    # with_lock, `timeout` is how long to wait for the lock (0: one try); each
    # request to the store keeps the store's timeout (Hiera libkv::timeout, else
    # the default).
    TTL_OPTION = { 'ttl' => 'Integer[1]' }.freeze
    LOCK_OPTIONS = {
      'ttl' => 'Integer[1]',
      'timeout' => "Variant[Integer[0, #{::LibKV::MAX_TIMEOUT.to_i}], Float[0, #{::LibKV::MAX_TIMEOUT}]]",
    }.freeze
    # For watch and watchtree, `timeout` is how long to wait for a change, and
    # `previous` what the change is from: what atomic_get (watch) or atomic_list
    # (watchtree) returned; by default the state as the call starts.
    PREVIOUS_TYPE = 'Struct[{value => Any, sequence => Integer[0]}]'
    WATCH_OPTIONS = {
      'previous' => "Variant[Integer[0], #{PREVIOUS_TYPE}]",
      'timeout' => OPTION_TYPES['timeout'],
    }.freeze
    WATCHTREE_OPTIONS = WATCH_OPTIONS.merge('previous' => "Hash[String, #{PREVIOUS_TYPE}]").freeze

    # A function: its parameters, what it does with a store (given the store, the
    # arguments by name and serialize), the value softfail returns when the store
    # fails, its own options and their defaults.
    Function = Struct.new(:params, :operation, :safe, :options, :defaults)

    # A lock's defaults in Puppet, as in the Ruby API.
    LOCK_DEFAULTS = { 'ttl' => ::LibKV::Store::LOCK_TTL, 'timeout' => ::LibKV::Store::LOCK_TIMEOUT }.freeze
    # How long watch and watchtree wait by default, as the Ruby API's changed.
    WATCH_DEFAULTS = { 'timeout' => ::LibKV::Store::WATCH_TIMEOUT }.freeze

    FUNCTIONS = {
      'get' => Function.new(%w[key], ->(s, a, ser) { s.get(a['key'], serialize: ser) }, nil),
      'put' => Function.new(%w[key value], ->(s, a, ser) { s.put(a['key'], a['value'], serialize: ser, ttl: a['ttl']) },
                            false, TTL_OPTION),
      'delete' => Function.new(%w[key], ->(s, a, _) { s.delete(a['key']) }, false),
      'exists' => Function.new(%w[key], ->(s, a, _) { s.exists(a['key']) }, false),
      'list' => Function.new(%w[key], ->(s, a, ser) { s.list(a['key'], serialize: ser) }, {}),
      'deletetree' => Function.new(%w[key], ->(s, a, _) { s.deletetree(a['key']) }, false),
      'atomic_create' => Function.new(%w[key value],
                                      lambda { |s, a, ser|
                                        s.atomic_create(a['key'], a['value'], serialize: ser, ttl: a['ttl'])
                                      }, false, TTL_OPTION),
      'atomic_get' => Function.new(%w[key], ->(s, a, ser) { s.atomic_get(a['key'], serialize: ser) },
                                   ::LibKV.empty_value),
      'atomic_put' => Function.new(%w[key value previous],
                                   lambda { |s, a, ser|
                                     s.atomic_put(a['key'], a['value'], a['previous'], serialize: ser, ttl: a['ttl'])
                                   }, false, TTL_OPTION),
      'atomic_delete' => Function.new(%w[key previous], ->(s, a, _) { s.atomic_delete(a['key'], a['previous']) },
                                      false),
      'atomic_list' => Function.new(%w[key], ->(s, a, ser) { s.atomic_list(a['key'], serialize: ser) }, {}),
      'info' => Function.new([], ->(s, _, _) { s.info }, {}),
      'provider' => Function.new([], ->(s, _, _) { s.provider }, nil),
      'supports' => Function.new([], ->(s, _, _) { s.supports }, []),
      # Puppet's locks are not renewed: the compilation hands them on (to the
      # agent's run, say), and they hold until their ttl passes or libkv::unlock.
      'newlock' => Function.new(%w[key],
                                lambda { |s, a, _|
                                  lock = s.newlock(a['key'], ttl: a['ttl'], timeout: a['wait'], renew: false)
                                  lock.detach
                                  lock.to_h
                                }, nil, LOCK_OPTIONS, LOCK_DEFAULTS),
      'unlock' => Function.new(%w[lock], ->(s, a, _) { s.unlock(a['lock']['key'], a['lock']['owner']) }, false),
      # Renewed while the block runs; a lock lost meanwhile fails the call (with
      # softfail: undef, and pop_error says why) after the block.
      'with_lock' => Function.new(%w[key],
                                  lambda { |s, a, _|
                                    s.lock(a['key'], ttl: a['ttl'], timeout: a['wait']) { |l| a['block'].call(l.to_h) }
                                  }, nil, LOCK_OPTIONS, LOCK_DEFAULTS),
      # One wait of at most `timeout` for the key (the keys below the directory)
      # to differ from `previous`: the state then, as atomic_get (atomic_list).
      'watch' => Function.new(%w[key],
                              lambda { |s, a, ser|
                                s.changed(a['key'], previous: a['previous'], timeout: a['wait'], serialize: ser)
                              }, ::LibKV.empty_value, WATCH_OPTIONS, WATCH_DEFAULTS),
      'watchtree' => Function.new(%w[key],
                                  lambda { |s, a, ser|
                                    s.changedtree(a['key'], previous: a['previous'], timeout: a['wait'],
                                                            serialize: ser)
                                  }, {}, WATCHTREE_OPTIONS, WATCH_DEFAULTS),
    }.freeze

    # Per catalog compilation: the mock stores (their data lives for one compile),
    # the Hiera defaults (looked up once), for each distinct options Hash the
    # resolved options and the store (so repeated calls skip that work), and the
    # message of the last soft failure, for libkv::pop_error.
    # The stores the Hiera backend found failing in this compilation (by url
    # and auth, with the message), so that later lookups skip them at once.
    class CompileState < Puppet::Pops::Adaptable::Adapter
      attr_reader :mock_stores, :prepared, :named_types, :failed_stores
      attr_accessor :hiera_defaults, :last_error

      def initialize
        super
        @mock_stores = {}
        @hiera_defaults = nil
        @prepared = {}
        @last_error = nil
        @named_types = {}
        @failed_stores = {}
      end
    end

    # Outside a compilation, pop_error's message belongs to the Ruby thread.
    LAST_ERROR = :libkv_last_error

    @stores = {}
    @mutex = Mutex.new

    class << self
      # Runs libkv::<name> with +args+ (parameter name => value) and +options+.
      def call(func, name, args, options, &block)
        run(func, name, args, options || {}, true, &block)
      end

      # Runs libkv::<name> given one Hash of named parameters and options.
      def call_named(func, name, params)
        assert_type("libkv::#{name}", named_type(func, name), hide_auth(params))
        params_of(name).each do |param|
          next if params.key?(param)

          raise ArgumentError, "libkv::#{name}: the Hash of parameters has no '#{param}' entry"
        end
        # The options were checked with the parameters just above.
        own = FUNCTIONS.fetch(name).options || {}
        run(func, name, params.select { |k, _| params_of(name).include?(k) },
            params.select { |k, _| OPTION_TYPES.key?(k) || own.key?(k) }, false)
      end

      # The message of the last soft-failed call in this compilation (outside one:
      # in this Ruby thread), then forgets it.
      def pop_error(func)
        state = compile_state(func)
        if state
          message = state.last_error
          state.last_error = nil
        else
          message = Thread.current.thread_variable_get(LAST_ERROR)
          Thread.current.thread_variable_set(LAST_ERROR, nil)
        end
        message
      end

      def empty_value
        ::LibKV.empty_value
      end

      # For the Hiera backend: the resolved options (url, auth and timeout as the
      # functions resolve them) and the store of +options+, the same cached store
      # the functions use.
      def store_for_options(func, options)
        prepare(func, compile_state(func), 'lookup', options, false)
      end

      # After a store failure: the next call opens the store again.
      def forget_store(func, store)
        forget(compile_state(func), store)
      end

      def remember_failure(func, message)
        remember_error(compile_state(func), message)
      end

      def compile_state(func)
        compiler = compiler_of(func)
        compiler ? CompileState.adapt(compiler) : nil
      end

      private

      def params_of(name)
        FUNCTIONS.fetch(name).params
      end

      def run(func, name, args, options, check_options, &block)
        function = FUNCTIONS.fetch(name)
        state = compile_state(func)
        key = args['key'] || (args['lock'].is_a?(Hash) ? args['lock']['key'] : nil)
        begin
          # Opening a store touches nothing: only bad input (a URL, auth) fails here.
          opts, store = prepare(func, state, name, options, check_options)
        rescue ::LibKV::InvalidArgumentError, TypeError => e
          raise ArgumentError, message(name, key, e)
        end
        started = Process.clock_gettime(Process::CLOCK_MONOTONIC) if opts['debug']
        # Input is converted (and refused) before the store is touched (opening a
        # store touches nothing); the binding then checks the key and encodes the
        # value before any I/O.
        args = own_options(function, options, to_libkv_args(name, args, opts))
        args['block'] = block if block
        begin
          result = from_libkv(function.operation.call(store, args, opts['serialize']))
          log_debug(name, key, store, started, 'ok') if opts['debug']
          result
        rescue ::LibKV::StoreError => e
          # A lock held by another, or lost, is no failure of the store.
          forget(state, store) unless e.is_a?(::LibKV::LockTimeoutError) || e.is_a?(::LibKV::LockLostError)
          log_debug(name, key, store, started, "failed: #{e.class}") if opts['debug']
          raise Puppet::Error, message(name, key, e) unless opts['softfail']

          safe = function.safe
          message = message(name, key, e)
          remember_error(state, message)
          Puppet.warning("#{message} (softfail: returning #{puppet_form(safe)})")
          safe.dup
        rescue ::LibKV::InvalidArgumentError, TypeError => e
          raise ArgumentError, message(name, key, e)
        rescue ::LibKV::Error => e
          raise Puppet::Error, message(name, key, e)
        end
      end

      # +args+ with the function's own options (or their defaults): `ttl`,
      # `previous`, and `timeout` as `wait` (for the lock and watch functions, how
      # long they wait).
      def own_options(function, options, args)
        own = function.options
        return args unless own

        defaults = function.defaults || {}
        args = args.dup
        args['ttl'] = options['ttl'] || defaults['ttl'] if own.key?('ttl')
        args['wait'] = options['timeout'] || defaults['timeout'] if own.key?('timeout')
        args['previous'] = options['previous'] if own.key?('previous')
        args
      end

      # "libkv::get: <what failed>", naming the key when the error is not about it.
      def message(name, key, error)
        named = error.respond_to?(:key) && error.key == key
        key && !named ? "libkv::#{name} with key '#{key}': #{error.message}" : "libkv::#{name}: #{error.message}"
      end

      def remember_error(state, message)
        if state
          state.last_error = message
        else
          Thread.current.thread_variable_set(LAST_ERROR, message)
        end
      end

      # A value as Puppet shows it: undef, {'value' => undef, 'sequence' => 0}.
      def puppet_form(value)
        Puppet::Pops::Types::StringConverter.singleton.convert(value, '%p')
      end

      # The resolved options and the store for +options+, worked out once per
      # distinct options Hash in a compilation.
      def prepare(func, state, name, options, check_options)
        # Keyed by function too: options one function takes another may refuse.
        memo = [name, options]
        found = state && state.prepared[memo]
        return found if found

        assert_options(name, options) if check_options
        opts = resolve(func, name, options)
        prepared = [opts, store_for(state, opts)].freeze
        state.prepared[[name, options.dup.freeze].freeze] = prepared if state
        prepared
      end

      # Call options, then Hiera libkv::<option>, then defaults. An option given as
      # undef takes its default.
      def resolve(func, name, options)
        own = FUNCTIONS.key?(name) ? FUNCTIONS[name].options || {} : {}
        # A function's own options are not the store's (a lock's timeout is its wait).
        opts = options.reject { |k, v| v.nil? || own.key?(k) }
        check_mode(opts.delete('mode'))
        missing = HIERA_OPTIONS.reject { |o| opts.key?(o) }
        unless missing.empty?
          defaults = hiera_defaults(func)
          missing.each { |o| opts[o] = defaults[o] unless defaults[o].nil? }
        end
        opts['url'] = text(opts['url'] || DEFAULT_URL, 'the url option')
        opts['auth'] = unwrap_auth(opts['auth'] || {})
        opts['timeout'] ||= ::LibKV::DEFAULT_TIMEOUT
        opts['serialize'] = true if opts['serialize'].nil?
        opts
      end

      def hiera_defaults(func)
        state = compile_state(func)
        return {} unless state

        state.hiera_defaults ||= HIERA_OPTIONS.each_with_object({}) do |option, found|
          value = hiera_lookup(func, "libkv::#{option}")
          next if value.nil?

          assert_type("Hiera libkv::#{option}", parse_type(OPTION_TYPES[option]),
                      option == 'auth' ? sensitive_values(value) : value)
          found[option] = value
        end
      end

      # The Hiera value of +key+, or nil. At debug level Puppet's lookup explains
      # every lookup in the log, with the value found; libkv::auth holds secrets,
      # so these lookups, which the manifest did not ask for, run without the
      # explanation. (The lookup function otherwise, on a Puppet without it.)
      def hiera_lookup(func, key)
        invocation_class = Puppet::Pops::Lookup::Invocation
        return func.call_function('lookup', key, 'default_value' => nil) unless
          invocation_class.method_defined?(:without_explain)

        invocation = invocation_class.new(func.closure_scope)
        invocation.without_explain { Puppet::Pops::Lookup.lookup(key, nil, nil, true, nil, invocation) }
      end

      def compiler_of(func)
        scope = func.closure_scope
        scope.respond_to?(:compiler) ? scope.compiler : nil
      end

      # SIMP libkv's mode: 'puppet', its only working value, is what libkv does.
      def check_mode(mode)
        return if mode.nil? || mode == 'puppet'

        raise ArgumentError, "the mode option #{puppet_form(mode)} is not supported: libkv works as SIMP " \
                             "libkv's mode 'puppet' (its only working mode) does; leave mode out or set it to 'puppet'"
      end

      # The auth settings as the Ruby API takes them: the Hash and its values out of
      # any Sensitive, every value as text.
      def unwrap_auth(auth)
        sensitive = Puppet::Pops::Types::PSensitiveType::Sensitive
        auth = auth.unwrap if auth.is_a?(sensitive)
        auth.each_with_object({}) do |(k, v), plain|
          plain[k] = text(v.is_a?(sensitive) ? v.unwrap : v, "the auth setting #{k}")
        end
      end

      # A Puppet String as text. Facts, $trusted and strings made from them often
      # arrive as BINARY (ASCII-8BIT) Ruby Strings; they are text all the same.
      # Only a Puppet Binary is bytes (see to_libkv).
      def text(string, what)
        return string unless string.encoding == Encoding::BINARY

        utf8 = string.dup.force_encoding(Encoding::UTF_8)
        return utf8 if utf8.valid_encoding?

        raise ArgumentError, "#{what} is not valid UTF-8 text; to store bytes, pass a Binary (Binary($bytes, '%r'))"
      end

      # The store +opts+ name. Stores are kept per process, by all they are opened
      # with (Puppet's vardir and environment root legacy-simp6://); a mock store,
      # whose data lives for one compilation, by the compilation (the store says
      # what it is).
      def store_for(state, opts)
        key = [opts['url'], opts['auth'], opts['timeout'].to_f, Puppet[:vardir], environment_name]
        @mutex.synchronize do
          found = (state && state.mock_stores[key]) || @stores[key]
          return found if found

          store = ::LibKV.open(opts['url'], opts['auth'], timeout: opts['timeout'], vardir: Puppet[:vardir],
                                                          environment: environment_name)
          (state && store.is_a?(::LibKV::Mock) ? state.mock_stores : @stores)[key] = store
        end
      end

      # A store that failed is opened again by the next call.
      def forget(state, store)
        @mutex.synchronize do
          [@stores, state && state.mock_stores].compact.each { |cache| cache.delete_if { |_, s| s.equal?(store) } }
        end
        state.prepared.delete_if { |_, (_, prepared_store)| prepared_store.equal?(store) } if state
      end

      def environment_name
        env = Puppet.lookup(:current_environment) { nil }
        env ? env.name.to_s : Puppet[:environment].to_s
      end

      # Puppet values as the Ruby API takes them: Binary as a binary String; with
      # serialize false, the value's string form.
      def to_libkv_args(name, args, opts)
        return args unless args.key?('value')

        converted = args.dup
        converted['value'] =
          if opts['serialize']
            to_libkv(args['value'], name, args['key'])
          else
            string_form(args['value'], name, args['key'])
          end
        converted
      end

      def to_libkv(value, name, key)
        case value
        when String
          value.encoding == Encoding::BINARY ? text(value, "libkv::#{name}: the String to store at #{key}") : value
        when Integer, Float, true, false, nil
          value
        when Puppet::Pops::Types::PBinaryType::Binary
          value.binary_buffer
        when Array
          value.map { |v| to_libkv(v, name, key) }
        when Hash
          value.each_with_object({}) { |(k, v), h| h[to_libkv(k, name, key)] = to_libkv(v, name, key) }
        else
          raise ArgumentError, "libkv::#{name}: cannot store #{described(value)} at #{key}; libkv stores " \
                               'Undef, Boolean, Integer, Float, String, Binary, and Arrays and Hashes of these' \
                               "#{value.is_a?(Puppet::Pops::Types::PSensitiveType::Sensitive) ? sensitive_advice : ''}"
        end
      end

      def sensitive_advice
        '; to store a secret, unwrap the Sensitive value yourself'
      end

      # What a value libkv does not store is, for a message: its type, never its
      # contents (a Sensitive shows as Sensitive only).
      def described(value)
        case value
        when Puppet::Pops::Types::PResourceType, Puppet::Pops::Types::PClassType
          "a resource reference (#{value})"
        when Puppet::Pops::Types::PAnyType
          "a type (#{value})"
        when Puppet::Pops::Types::PSensitiveType::Sensitive
          'a value of type Sensitive'
        else
          type = Puppet::Pops::Types::TypeCalculator.infer(value)
          "a value of type #{type.respond_to?(:name) && type.name ? type.name : value.class.name}"
        end
      end

      # The string form of a value, for serialize => false: String($value), a
      # Binary's bytes. What serialize => true refuses is refused here too (it
      # would be stored as text it cannot be read back from: a Sensitive as
      # "Sensitive [value redacted]").
      def string_form(value, name, key)
        to_libkv(value, name, key)
        case value
        when String then text(value, "libkv::#{name}: the String to store at #{key}")
        when Puppet::Pops::Types::PBinaryType::Binary then value.binary_buffer
        else Puppet::Pops::Types::StringConverter.singleton.convert(value)
        end
      end

      # Ruby API values as Puppet values: binary Strings become Binary. Values
      # without one (LibKV.binary_inside? looks, in native code) are returned as
      # they are, unwalked and uncopied.
      def from_libkv(value)
        ::LibKV.binary_inside?(value) ? to_binary(value) : value
      end

      def to_binary(value)
        case value
        when String
          value.encoding == Encoding::BINARY ? Puppet::Pops::Types::PBinaryType::Binary.from_binary_string(value) : value
        when Array
          value.map { |v| to_binary(v) }
        when Hash
          value.each_with_object({}) { |(k, v), h| h[to_binary(k)] = to_binary(v) }
        else
          value
        end
      end

      # The store's URL is the core's, which never holds a secret.
      def log_debug(name, key, store, started, outcome)
        ms = (Process.clock_gettime(Process::CLOCK_MONOTONIC) - started) * 1000.0
        where = key ? " key=#{key}" : ''
        Puppet.debug(format('libkv::%<name>s%<where>s store=%<url>s %<outcome>s in %<ms>.3f ms',
                            name: name, where: where, url: store.url, outcome: outcome, ms: ms))
      end

      def assert_options(name, options)
        assert_type("libkv::#{name} options", options_type(name), hide_auth(options))
      end

      # +options+ as type checks see them: every auth value Sensitive. A mismatch
      # message describes the value it got, and for a Hash with a bad key that is
      # every value ("got Hash[Enum['', 'password'], Enum['s3cret', 'x']]"); a
      # Sensitive is described by its type only ("Sensitive[Integer]"). The check
      # itself is the same: auth takes Sensitive[String] wherever it takes a String.
      def hide_auth(options)
        return options unless options.is_a?(Hash) && options['auth'].is_a?(Hash)

        options.merge('auth' => sensitive_values(options['auth']))
      end

      def sensitive_values(auth)
        return auth unless auth.is_a?(Hash)

        sensitive = Puppet::Pops::Types::PSensitiveType::Sensitive
        auth.each_with_object({}) { |(k, v), hidden| hidden[k] = v.is_a?(sensitive) ? v : sensitive.new(v) }
      end

      def assert_type(subject, type, value)
        Puppet::Pops::Types::TypeAsserter.assert_instance_of(subject, type, value)
      rescue Puppet::Pops::Types::TypeAssertionError => e
        raise ArgumentError, e.message
      end

      def options_type(name)
        @options_types ||= {}
        @options_types[name] ||= parse_type(struct(option_entries(name)))
      end

      # The type of the named-parameter Hash, per compilation: it names the module's
      # type aliases, which the function's own loader knows.
      def named_type(func, name)
        state = compile_state(func)
        types = state ? state.named_types : {}
        types[name] ||= parse_type(struct(params_of(name).map { |p| [p, PARAM_TYPES[p]] } + option_entries(name)),
                                   func.loader)
      end

      # Every option may be left out, or given as undef (its default).
      def option_entries(name = nil)
        own = name ? FUNCTIONS.fetch(name).options || {} : {}
        OPTION_TYPES.merge(own).map { |o, t| ["Optional[#{o}]", "Optional[#{t}]"] }
      end

      def struct(entries)
        "Struct[{#{entries.map { |k, t| "#{k} => #{t}" }.join(', ')}}]"
      end

      def parse_type(text, loader = nil)
        Puppet::Pops::Types::TypeParser.singleton.parse(text, loader)
      end

      # What the Hiera backend shares with the functions.
      public :from_libkv, :assert_type, :parse_type, :option_entries, :struct, :puppet_form
    end
  end
end
