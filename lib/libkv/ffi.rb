# frozen_string_literal: true

# The binding of libkv for Rubies that cannot load the MRI extension, such as
# puppetserver's JRuby: the same Rust core, compiled as a C ABI library
# (crates/libkv-ffi), called through FFI. This file only marshals: Ruby values to
# the envelope DATA JSON the library takes (see crates/libkv-ffi/src/lib.rs) and
# back, and the library's errors to the exceptions of libkv/errors.rb. It defines
# what ext/libkv defines on MRI: LibKV::Store._open, the store's underscored
# methods, provider, url, supports, info, and LibKV.binary_inside?.
#
# Puppet reloads function files on every compile, and a module's lib/ and the gem
# may both hold this file: loaded again, it keeps the first definition. The guard
# is Native::PATH, defined once the library is found and checked and before
# anything else: until then this file defines nothing (no constant, no method, no
# struct layout), so a load that failed there (no library, another version) leaves
# nothing behind, and the next load tries again from the start.
return if defined?(LibKV::Native::PATH)

require 'ffi'
require 'json'
require 'libkv/version'
require 'libkv/errors'

module LibKV
  # The C ABI library and its functions.
  module Native
    extend ::FFI::Library

    abi_version = 3 # what this Ruby code speaks; the library tells its own
    library = "libkv_ffi.#{::FFI::Platform::LIBSUFFIX}"

    # Where the library may be, in order: LIBKV_FFI_LIBRARY; beside this file (in
    # an installed libkv gem, or in a checkout after `rake compile:ffi`); in an
    # installed libkv gem of this version; a cargo build in a checkout.
    candidates =
      if ENV['LIBKV_FFI_LIBRARY'].to_s.empty?
        begin
          gems = Gem::Specification.find_all_by_name('libkv', LibKV::VERSION).map do |spec|
            ::File.join(spec.full_gem_path, 'lib', 'libkv', library)
          end
          target = ::File.expand_path('../../target', __dir__)
          cargo = %w[release debug].map do |profile|
            ::File.join(target, profile, "liblibkv_ffi.#{::FFI::Platform::LIBSUFFIX}")
          end
          ([::File.join(__dir__, library)] + gems + cargo).uniq
        rescue StandardError # no RubyGems, or a broken gem: the other places
          [::File.join(__dir__, library)]
        end
      else
        [ENV['LIBKV_FFI_LIBRARY']]
      end
    path = candidates.find { |c| ::File.file?(c) }
    unless path
      raise LoadError, "libkv's C ABI library (#{library}), which #{RUBY_ENGINE} loads through FFI, " \
                       "was not found at #{candidates.join(', ')}. On a Puppet server, install the libkv gem " \
                       "built for JRuby: `rake gem:java` in a libkv checkout (needs Rust), then " \
                       "`puppetserver gem install --local pkg/libkv-#{LibKV::VERSION}-java.gem`. In a checkout, " \
                       '`rake compile:ffi`. Or set LIBKV_FFI_LIBRARY to its path. See "On a Puppet server" ' \
                       "in libkv's README."
    end

    # The library and this Ruby code must be of one libkv version: the C ABI
    # version alone does not tell two builds apart. Asked through functions of
    # their own, so that nothing is attached to this module yet.
    found = ::FFI::DynamicLibrary.open(path, ::FFI::DynamicLibrary::RTLD_LAZY | ::FFI::DynamicLibrary::RTLD_LOCAL)
    ask = lambda do |name, type|
      symbol = found.find_function(name) or raise LoadError, "#{path} is not libkv's C ABI library (no #{name})"
      ::FFI::Function.new(type, [], symbol).call
    end
    their_abi = ask.call('libkv_abi_version', :uint32)
    their_version = ask.call('libkv_version', :string)
    unless their_abi == abi_version && their_version == LibKV::VERSION
      raise LoadError, "#{path} is libkv #{their_version} (C ABI version #{their_abi}), but this Ruby code " \
                       "(#{__FILE__}) is libkv #{LibKV::VERSION} (C ABI version #{abi_version}): install the " \
                       "library of libkv #{LibKV::VERSION}, the libkv gem built for JRuby of that version " \
                       "(see \"On a Puppet server\" in libkv's README)"
    end

    # The guard above: nothing below fails but a bug.
    PATH = path.freeze
    ABI_VERSION = abi_version
    LIBRARY = library.freeze

    ffi_lib PATH

    # Mirrors LibkvResult.
    class Result < ::FFI::Struct
      layout :status, :int32, :data, :pointer, :data_len, :size_t, :key, :pointer, :key_len, :size_t,
             :store, :uint64
    end

    attach_function :libkv_abi_version, [], :uint32
    attach_function :libkv_version, [], :string
    attach_function :libkv_open, %i[buffer_in size_t buffer_in size_t double buffer_in size_t buffer_in size_t],
                    :pointer, blocking: true
    attach_function :libkv_call, %i[uint64 buffer_in size_t buffer_in size_t int32 buffer_in size_t int32
                                    uint64 int32], :pointer, blocking: true
    attach_function :libkv_store_free, [:uint64], :void
    attach_function :libkv_result_free, [:pointer], :void

    # Status codes (LIBKV_OK, LIBKV_E_*) and the exceptions they raise.
    ERRORS = {
      1 => InvalidArgumentError, 2 => InvalidKeyError, 3 => UnsupportedError, 4 => StoreError,
      5 => ConflictError, 6 => ConnectionError, 7 => TimeoutError, 8 => AuthError, 9 => Error
    }.freeze

    VALUE_NONE = 0
    VALUE_DATA = 1
    VALUE_RAW = 2
    VALUE_REFUSED = 3
    VALUE_NOT_STRING = 4
    PREVIOUS_NONE = 0
    PREVIOUS_SEQUENCE = 1
    PREVIOUS_MALFORMED = 2

    # One open store's handle in the library (a number, never a pointer: see
    # "Store handles" in crates/libkv-ffi/src/lib.rs), closed when this object is
    # garbage: a finalizer frees it, on whatever thread the GC runs finalizers.
    # Should a call be running then, the library lets it finish first, and a free
    # of a handle freed already does nothing.
    class Handle
      attr_reader :id

      def initialize(id)
        @id = id
        ::ObjectSpace.define_finalizer(self, Handle.closer(id))
      end

      # The finalizer: it must not hold the Handle itself.
      def self.closer(id)
        proc { Native.libkv_store_free(id) }
      end
    end

    # The data of a result (a JSON document), and the Handle of the store it
    # opened (nil if none), freeing the result; raises the result's error.
    def self.take(pointer)
      result = Result.new(pointer)
      # Wrapped first, so that nothing after (here or in the caller) can leak it.
      store = result[:store]
      handle = Handle.new(store) unless store.zero?
      data = bytes(result[:data], result[:data_len])
      status = result[:status]
      return [data, handle] if status.zero?

      key = result[:key].null? ? nil : bytes(result[:key], result[:key_len])
      error = ERRORS.fetch(status, Error).new(data)
      error.instance_variable_set(:@key, key)
      raise error
    ensure
      libkv_result_free(pointer)
    end

    # A copy of +len+ bytes at +pointer+, as UTF-8 (the library writes only UTF-8).
    # An empty buffer's pointer is not read.
    def self.bytes(pointer, len)
      (len.zero? ? +'' : pointer.read_bytes(len)).force_encoding(Encoding::UTF_8)
    end
  end

  # Ruby values to envelope DATA and back, as ext/libkv/src/convert.rs converts
  # them on MRI: the same types, the same refusals.
  module Data
    MAX_DEPTH = 100 # codec::MAX_DEPTH
    INT_RANGE = (-2**63..2**63 - 1).freeze
    PTYPE = '__ptype'
    PVALUE = '__pvalue'

    # Why a value cannot be stored: a kind and its detail, which the library words
    # (LIBKV_VALUE_REFUSED in crates/libkv-ffi), as the MRI binding's refusals are.
    class Refusal < StandardError
      attr_reader :parts

      def initialize(*parts)
        @parts = parts
        super(parts.first)
      end
    end

    class << self
      # The DATA JSON of +value+; raises Refusal.
      def generate(value)
        state = { nonfinite: nil }
        tree = to_data(value, 0, state)
        if state[:nonfinite]
          raise Refusal.new('non-finite', float_name(state[:nonfinite]))
        end

        ::JSON.generate(tree, max_nesting: false)
      end

      # The Ruby value of DATA JSON.
      def parse(json)
        value = ::JSON.parse(json, max_nesting: false, create_additions: false)
        json.include?('"__ptype"') ? untag(value) : value
      end

      # Whether +v+ is, or holds at any depth, a binary String; true deeper than a
      # value can be stored, so that the caller's own walk decides.
      def binary_inside?(v, depth)
        return v.encoding == Encoding::BINARY if v.is_a?(String)
        return true if depth > MAX_DEPTH

        case v
        when Array then v.any? { |item| binary_inside?(item, depth + 1) }
        when Hash then v.any? { |k, item| binary_inside?(k, depth + 1) || binary_inside?(item, depth + 1) }
        else false
        end
      end

      private

      def to_data(v, depth, state)
        case v
        when nil, true, false then v
        when String then string(v)
        when Integer
          raise Refusal, 'integer-range' unless INT_RANGE.cover?(v)

          v
        when Float
          state[:nonfinite] ||= v unless v.finite?
          v
        when Array
          inner = nest(depth)
          v.map { |item| to_data(item, inner, state) }
        when Hash then hash_data(v, nest(depth), state)
        when Symbol then v.to_s
        else
          raise Refusal.new('class', v.class.name || v.class.inspect)
        end
      end

      def hash_data(v, depth, state)
        pairs = v.map { |k, item| [to_data(k, depth, state), to_data(item, depth, state)] }
        if pairs.all? { |k, _| k.is_a?(String) && k != PTYPE }
          pairs.to_h
        else
          { PTYPE => 'Hash', PVALUE => pairs.flatten(1) }
        end
      end

      def nest(depth)
        return depth + 1 if depth < MAX_DEPTH

        raise Refusal, 'too-deep'
      end

      def string(s)
        return { PTYPE => 'Binary', PVALUE => [s].pack('m0') } if s.encoding == Encoding::BINARY

        unless s.encoding == Encoding::UTF_8 || s.encoding == Encoding::US_ASCII
          begin
            s = s.encode(Encoding::UTF_8)
          rescue EncodingError => e
            raise Refusal.new('not-convertible', e.message)
          end
        end
        raise Refusal, 'not-utf8' unless s.valid_encoding?

        s
      end

      # A non-finite Float as the library reads it.
      def float_name(f)
        return 'NaN' if f.nan?

        f.positive? ? 'inf' : '-inf'
      end

      def untag(v)
        case v
        when Array then v.map! { |item| untag(item) }
        when Hash
          case v[PTYPE]
          when nil then v.each { |k, item| v[k] = untag(item) }
          when 'Binary' then v[PVALUE].unpack1('m0')
          else
            v[PVALUE].each_slice(2).each_with_object({}) { |(k, item), h| h[untag(k)] = untag(item) }
          end
        else v
        end
      end
    end
  end

  # LibKV.binary_inside?(value): whether +value+ is, or holds at any depth, a
  # binary (BINARY-encoded) String.
  def self.binary_inside?(value)
    Data.binary_inside?(value, 0)
  end

  # One open store; lib/libkv/store.rb adds the public methods.
  class Store
    CLASSES = {
      'mock' => :Mock, 'file' => :File, 'legacy-simp6' => :LegacySimp6, 'consul' => :Consul, 'etcd' => :Etcd
    }.freeze
    ALLOCATE = ::Class.instance_method(:allocate)
    NO_KEY = ''

    class << self
      # As on MRI, stores come only from LibKV.open.
      def allocate
        raise TypeError, "allocator undefined for #{name}"
      end

      def new(*)
        raise TypeError, "allocator undefined for #{name}"
      end

      # LibKV::Store._open(url, auth, timeout, vardir, environment): an instance of
      # the backend's class.
      def _open(url, auth, timeout, vardir, environment)
        url = text(url)
        vardir = text(vardir) if vardir
        environment = text(environment) if environment
        auth_json = ::JSON.generate(auth.map { |k, v| [auth_name(k), utf8(v)] })
        data, handle = Native.take(Native.libkv_open(url, url.bytesize, auth_json, auth_json.bytesize, timeout,
                                                     vardir, vardir ? vardir.bytesize : 0,
                                                     environment, environment ? environment.bytesize : 0))
        # Should anything below fail, the handle is garbage, and its finalizer frees it.
        described = ::JSON.parse(data)
        store = ALLOCATE.bind(LibKV.const_get(CLASSES.fetch(described['provider']))).call
        store.send(:_init, handle, described)
        store
      end

      private

      # +s+ as UTF-8 text, as the MRI extension takes a String argument (magnus):
      # UTF-8 and US-ASCII as they are, another encoding converted, and an
      # EncodingError, in the same words, for what is not valid UTF-8 or does not
      # convert. The library never sees other bytes.
      def text(s)
        encoding = s.encoding
        if encoding == Encoding::UTF_8 || encoding == Encoding::US_ASCII
          return s if s.valid_encoding?

          raise EncodingError, 'invalid byte sequence in UTF-8'
        end
        return s if encoding.ascii_compatible? && s.ascii_only?

        converted = begin
          s.encode(Encoding::UTF_8)
        rescue EncodingError
          nil
        end
        raise EncodingError, "expected utf-8, got #{encoding.name}" unless converted && converted.valid_encoding?

        converted
      end

      # An auth name as the library takes it: a String, or nil for a type it refuses.
      def auth_name(k)
        utf8(k.is_a?(Symbol) ? k.to_s : k)
      end

      # A String as UTF-8 text (see text: an EncodingError for what is not text, as
      # on MRI), or nil for what is not a String, which the library refuses by the
      # setting's name.
      def utf8(s)
        s.is_a?(String) ? text(s) : nil
      end
    end

    def provider
      @provider.dup
    end

    def url
      @url.dup
    end

    def supports
      @supports.map(&:dup)
    end

    def info
      call('info', NO_KEY, true)
    end

    # The store goes (a call running on it finishes first); later calls raise
    # LibKV::ClosedError. Closing twice is harmless.
    def close
      handle = @handle
      @handle = nil
      Native.libkv_store_free(handle.id) if handle
      nil
    end

    def closed?
      @handle.nil?
    end

    def _get(key, serialize)
      call('get', key, serialize)
    end

    def _put(key, value, serialize)
      call('put', key, serialize, value)
    end

    def _delete(key)
      call('delete', key, true)
    end

    def _exists(key)
      call('exists', key, true)
    end

    def _list(dir, serialize)
      call('list', dir, serialize)
    end

    def _deletetree(dir)
      call('deletetree', dir, true)
    end

    def _atomic_create(key, value, serialize)
      call('atomic_create', key, serialize, value)
    end

    def _atomic_get(key, serialize)
      call('atomic_get', key, serialize)
    end

    def _atomic_put(key, value, previous, serialize)
      call('atomic_put', key, serialize, value, previous)
    end

    def _atomic_delete(key, previous)
      call('atomic_delete', key, true, NO_VALUE, previous)
    end

    def _atomic_list(dir, serialize)
      call('atomic_list', dir, serialize)
    end

    private

    NO_VALUE = Object.new.freeze
    private_constant :NO_VALUE

    def keep_alive
      @handle
    end

    def _init(handle, described)
      @handle = handle
      @provider = described.fetch('provider').freeze
      @url = described.fetch('url').freeze
      @supports = described.fetch('supports').map(&:freeze).freeze
    end

    def call(op, key, serialize, value = NO_VALUE, previous = NO_VALUE)
      key = key_text(key)
      value_form, value_bytes = value.equal?(NO_VALUE) ? [Native::VALUE_NONE, nil] : marshal(value, serialize)
      previous_form, sequence = previous.equal?(NO_VALUE) ? [Native::PREVIOUS_NONE, 0] : sequence_of(previous)
      handle = @handle or raise ClosedError, "the store object for #{@url} is closed (Store#close); open it " \
                                             'again with LibKV.open'
      data, = Native.take(Native.libkv_call(handle.id, op, op.bytesize, key, key.bytesize,
                                            value_form, value_bytes, value_bytes ? value_bytes.bytesize : 0,
                                            previous_form, sequence, serialize ? 1 : 0))
      # Using the store after the call keeps it reachable until the call has
      # returned: otherwise a store that is garbage once its handle is read
      # (LibKV.open(url).get(key)) could have its handle freed by its finalizer
      # during the call, which would then fail as closed. (A close meanwhile lets
      # the call finish.)
      keep_alive
      Data.parse(data)
    end

    # A key as UTF-8 text, as ext/libkv takes it: a binary String's bytes as they
    # are, another encoding converted. What is not text the library refuses as an
    # invalid key.
    def key_text(key)
      raise TypeError, "no implicit conversion of #{key.nil? ? 'nil' : key.class} into String" unless key.is_a?(String)

      encoding = key.encoding
      return key if encoding == Encoding::BINARY || encoding == Encoding::UTF_8 || encoding == Encoding::US_ASCII

      key.encode(Encoding::UTF_8)
    rescue EncodingError
      key
    end

    def marshal(value, serialize)
      return value.is_a?(String) ? [Native::VALUE_RAW, value] : [Native::VALUE_NOT_STRING, nil] unless serialize

      [Native::VALUE_DATA, Data.generate(value)]
    rescue Data::Refusal => e
      [Native::VALUE_REFUSED, ::JSON.generate(e.parts)]
    end

    # The sequence in +previous+: what atomic_get returned, or an Integer.
    def sequence_of(previous)
      sequence =
        if previous.is_a?(Hash)
          previous.key?('sequence') ? previous['sequence'] : previous.fetch(:sequence, nil)
        else
          previous
        end
      if sequence.is_a?(Integer) && sequence >= 0 && sequence < 2**64
        [Native::PREVIOUS_SEQUENCE, sequence]
      else
        [Native::PREVIOUS_MALFORMED, 0]
      end
    end
  end
end
