# frozen_string_literal: true

# The C ABI library of libkv (crates/libkv-ffi), for lib/libkv/ffi.rb: where it is,
# whether it is of this libkv version, and its functions, results, and store and
# lock handles. Until the library is found and checked, this defines no constant
# in LibKV::Native: a load that failed leaves nothing behind but the empty module.

module LibKV
  # The C ABI library and its functions.
  module Native
    extend ::FFI::Library

    abi_version = 6 # what this Ruby code speaks; the library tells its own
    library = "libkv_ffi.#{::FFI::Platform::LIBSUFFIX}"

    # Where the library may be, in order: LIBKV_FFI_LIBRARY; beside libkv/ffi.rb (in
    # an installed libkv gem, or in a checkout after `rake compile:ffi`); in an
    # installed libkv gem of this version; a cargo build in a checkout.
    # lib/libkv, where libkv/ffi.rb is.
    beside = ::File.expand_path('..', __dir__)
    candidates =
      if ENV['LIBKV_FFI_LIBRARY'].to_s.empty?
        begin
          gems = Gem::Specification.find_all_by_name('libkv', LibKV::VERSION).map do |spec|
            ::File.join(spec.full_gem_path, 'lib', 'libkv', library)
          end
          target = ::File.expand_path('../../target', beside)
          cargo = %w[release debug].map do |profile|
            ::File.join(target, profile, "liblibkv_ffi.#{::FFI::Platform::LIBSUFFIX}")
          end
          ([::File.join(beside, library)] + gems + cargo).uniq
        rescue StandardError # no RubyGems, or a broken gem: the other places
          [::File.join(beside, library)]
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
             :handle, :uint64
    end

    attach_function :libkv_abi_version, [], :uint32
    attach_function :libkv_version, [], :string
    attach_function :libkv_error_name, [:int32], :string
    attach_function :libkv_default_timeout, [], :double
    attach_function :libkv_max_timeout, [], :double
    attach_function :libkv_open, %i[buffer_in size_t buffer_in size_t double buffer_in size_t buffer_in size_t],
                    :pointer, blocking: true
    attach_function :libkv_call, %i[uint64 buffer_in size_t buffer_in size_t int32 buffer_in size_t int32
                                    uint64 int32 int32 int64], :pointer, blocking: true
    attach_function :libkv_store_free, [:uint64], :void
    # Taking a lock waits up to its timeout; unlocking, detaching and releasing by
    # owner wait on the store. None holds anything of JRuby's meanwhile.
    attach_function :libkv_lock, %i[uint64 buffer_in size_t int64 double int32], :pointer, blocking: true
    attach_function :libkv_lock_held, [:uint64], :int32
    attach_function :libkv_lock_lost, [:uint64], :pointer
    attach_function :libkv_lock_unlock, [:uint64], :pointer, blocking: true
    attach_function :libkv_lock_detach, [:uint64], :pointer, blocking: true
    attach_function :libkv_lock_free, [:uint64], :void
    attach_function :libkv_unlock, %i[uint64 buffer_in size_t buffer_in size_t], :pointer, blocking: true
    attach_function :libkv_watch, %i[uint64 buffer_in size_t int32 int32 uint64 int32], :pointer, blocking: true
    attach_function :libkv_watch_next, %i[uint64 double], :pointer, blocking: true
    attach_function :libkv_watch_stop, [:uint64], :int32
    attach_function :libkv_watch_free, [:uint64], :void
    attach_function :libkv_changed, %i[uint64 buffer_in size_t int32 int32 uint64 buffer_in size_t double int32],
                    :pointer, blocking: true
    attach_function :libkv_result_free, [:pointer], :void

    # The exception of each error status, which the library names (see
    # libkv_error_name), from 1 up to the first number that names none.
    errors = {}
    status = 1
    while (name = libkv_error_name(status))
      errors[status] = LibKV.const_get(name)
      status += 1
    end
    ERRORS = errors.freeze

    VALUE_NONE = 0
    VALUE_DATA = 1
    VALUE_RAW = 2
    VALUE_REFUSED = 3
    VALUE_NOT_STRING = 4
    PREVIOUS_NONE = 0
    PREVIOUS_SEQUENCE = 1
    PREVIOUS_MALFORMED = 2
    PREVIOUS_LISTING = 3
    FROM_NOW = 0
    FROM_SEQUENCE = 1
    TTL_NONE = 0
    TTL_SECONDS = 1

    # One open store's handle in the library (a number, never a pointer: see
    # "Store handles" in crates/libkv-ffi/src/lib.rs), closed when this object is
    # garbage: a finalizer frees it, on whatever thread the GC runs finalizers.
    # Should a call be running then, the library lets it finish first, and a free
    # of a handle freed already does nothing.
    class Handle
      attr_reader :id

      def initialize(id)
        @id = id
        ::ObjectSpace.define_finalizer(self, self.class.closer(id))
      end

      # The finalizer: it must not hold the Handle itself.
      def self.closer(id)
        proc { Native.libkv_store_free(id) }
      end
    end

    # One lock's handle (see "Lock handles" in crates/libkv-ffi/src/lib.rs), freed
    # when this object is garbage, as a store's: a lock still held then is
    # released on a thread of the library's own, never the finalizer's.
    class LockHandle < Handle
      def self.closer(id)
        proc { Native.libkv_lock_free(id) }
      end
    end

    # One watch's handle (see "Watches" in crates/libkv-ffi/src/lib.rs), freed
    # (and the watch stopped) when this object is garbage.
    class WatchHandle < Handle
      def self.closer(id)
        proc { Native.libkv_watch_free(id) }
      end
    end

    # The data of a result (a JSON document), and the handle the call made (a
    # +kind+: Handle for a store, LockHandle for a lock; nil if none), freeing the
    # result; raises the result's error.
    def self.take(pointer, kind = Handle)
      result = Result.new(pointer)
      # Wrapped first, so that nothing after (here or in the caller) can leak it.
      id = result[:handle]
      handle = kind.new(id) unless id.zero?
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
end
