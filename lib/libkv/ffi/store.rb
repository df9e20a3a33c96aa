# frozen_string_literal: true

# LibKV::Store over the C ABI library, for lib/libkv/ffi.rb: what ext/libkv
# defines on MRI (LibKV::Store._open, the store's underscored methods, provider,
# url, supports, info, close) and LibKV.binary_inside?. LibKV::Lock, which
# _newlock returns, is in lock.rb.

module LibKV
  # The core's timeouts, in seconds.
  DEFAULT_TIMEOUT = Native.libkv_default_timeout
  MAX_TIMEOUT = Native.libkv_max_timeout

  # LibKV.binary_inside?(value): whether +value+ is, or holds at any depth, a
  # binary (BINARY-encoded) String.
  def self.binary_inside?(value)
    Data.binary_inside?(value, 0)
  end

  # One open store; lib/libkv/store.rb adds the public methods.
  class Store
    ALLOCATE = ::Class.instance_method(:allocate)
    NO_KEY = ''
    INT64 = (-2**63..2**63 - 1).freeze

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
        store = ALLOCATE.bind(LibKV.const_get(described.fetch('class'))).call
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
    def _close
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

    def _put(key, value, serialize, ttl)
      call('put', key, serialize, value, NO_VALUE, ttl)
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

    def _atomic_create(key, value, serialize, ttl)
      call('atomic_create', key, serialize, value, NO_VALUE, ttl)
    end

    def _atomic_get(key, serialize)
      call('atomic_get', key, serialize)
    end

    def _atomic_put(key, value, previous, serialize, ttl)
      call('atomic_put', key, serialize, value, previous, ttl)
    end

    def _atomic_delete(key, previous)
      call('atomic_delete', key, true, NO_VALUE, previous)
    end

    def _atomic_list(dir, serialize)
      call('atomic_list', dir, serialize)
    end

    # _newlock(key, ttl, timeout, renew): a LibKV::Lock. Waits up to +timeout+
    # seconds in the library, holding nothing of JRuby's.
    def _newlock(key, ttl, timeout, renew)
      ttl = native_int64(ttl)
      timeout = native_float(timeout)
      key = key_text(key)
      data, lock = Native.take(Native.libkv_lock(open_handle.id, key, key.bytesize, ttl, timeout, renew ? 1 : 0),
                               Native::LockHandle)
      keep_alive
      Lock.send(:_new, lock, ::JSON.parse(data))
    end

    # _unlock(key, owner): whether the lock +owner+ held at +key+ was released.
    def _unlock(key, owner)
      owner = Store.send(:text, native_string(owner))
      key = key_text(key)
      data, = Native.take(Native.libkv_unlock(open_handle.id, key, key.bytesize, owner, owner.bytesize))
      keep_alive
      data == 'true'
    end

    # _watch(key, tree, from, serialize): a LibKV::Watch.
    def _watch(key, tree, from, serialize)
      from_form, from = from.nil? ? [Native::FROM_NOW, 0] : [Native::FROM_SEQUENCE, from]
      key = key_text(key)
      data, watch = Native.take(Native.libkv_watch(open_handle.id, key, key.bytesize, tree ? 1 : 0,
                                                   from_form, from, serialize ? 1 : 0),
                                Native::WatchHandle)
      keep_alive
      Watch.send(:_new, watch, ::JSON.parse(data))
    end

    # _changed(key, tree, previous, timeout, serialize): Puppet's watch and
    # watchtree, waited for in the library.
    def _changed(key, tree, previous, timeout, serialize)
      timeout = native_float(timeout)
      key = key_text(key)
      listing = nil
      previous_form, sequence =
        if previous.nil? then [Native::PREVIOUS_NONE, 0]
        elsif tree
          listing = listing_of(previous)
          listing ? [Native::PREVIOUS_LISTING, 0] : [Native::PREVIOUS_MALFORMED, 0]
        else sequence_of(previous)
        end
      data, = Native.take(Native.libkv_changed(open_handle.id, key, key.bytesize, tree ? 1 : 0, previous_form,
                                               sequence, listing, listing ? listing.bytesize : 0, timeout,
                                               serialize ? 1 : 0))
      keep_alive
      Data.parse(data)
    end

    private

    # What atomic_list returned as the JSON [[relative key, sequence], ...];
    # nil when it is not that.
    def listing_of(previous)
      return nil unless previous.is_a?(Hash)

      pairs = previous.map do |rel, entry|
        return nil unless rel.is_a?(String) && entry.is_a?(Hash)

        form, sequence = sequence_of(entry)
        return nil unless form == Native::PREVIOUS_SEQUENCE

        [rel, sequence]
      end
      ::JSON.generate(pairs)
    end

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

    def open_handle
      @handle or raise ClosedError, "the store object for #{@url} is closed; open the store again"
    end

    # +ttl+ is nil or an Integer (lib/libkv/store.rb checked it); the store's
    # bounds are the library's to check.
    def call(op, key, serialize, value = NO_VALUE, previous = NO_VALUE, ttl = nil)
      ttl_form, seconds = ttl.nil? ? [Native::TTL_NONE, 0] : [Native::TTL_SECONDS, native_int64(ttl)]
      key = key_text(key)
      value_form, value_bytes = value.equal?(NO_VALUE) ? [Native::VALUE_NONE, nil] : marshal(value, serialize)
      previous_form, sequence = previous.equal?(NO_VALUE) ? [Native::PREVIOUS_NONE, 0] : sequence_of(previous)
      handle = open_handle
      data, = Native.take(Native.libkv_call(handle.id, op, op.bytesize, key, key.bytesize,
                                            value_form, value_bytes, value_bytes ? value_bytes.bytesize : 0,
                                            previous_form, sequence, serialize ? 1 : 0, ttl_form, seconds))
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

    # An Integer argument as ext/libkv takes an i64 (magnus): the same errors for
    # what is not one or is out of range.
    def native_int64(n)
      raise TypeError, "no implicit conversion of #{n.nil? ? 'nil' : n.class} into Integer" unless n.is_a?(Integer)
      raise RangeError, "bignum too big to convert into `long long'" unless INT64.cover?(n)

      n
    end

    # A Float argument as ext/libkv takes an f64.
    def native_float(f)
      raise TypeError, "no implicit conversion to float from #{f.nil? ? 'nil' : f.class}" unless f.is_a?(Numeric)

      f.to_f
    end

    # A String argument (ext/libkv takes a Rust String).
    def native_string(s)
      raise TypeError, "no implicit conversion of #{s.nil? ? 'nil' : s.class} into String" unless s.is_a?(String)

      s
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
