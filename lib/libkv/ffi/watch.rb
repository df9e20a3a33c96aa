# frozen_string_literal: true

# LibKV::Watch over the C ABI library, for lib/libkv/ffi.rb: what ext/libkv
# defines on MRI (_next, stop, stopped?, coalesces?); lib/libkv/watch.rb adds
# the rest for both bindings.

module LibKV
  # The changes to a key or below a directory (LibKV::Store#watch): a watch
  # handle of the library, freed (and the watch stopped) when this object is
  # garbage.
  class Watch
    ALLOCATE = ::Class.instance_method(:allocate)
    private_constant :ALLOCATE

    class << self
      # As on MRI, watches come only from LibKV::Store#watch and #watchtree.
      def allocate
        raise TypeError, "allocator undefined for #{name}"
      end

      def new(*)
        raise TypeError, "allocator undefined for #{name}"
      end

      private

      def _new(handle, described)
        watch = ALLOCATE.bind(self).call
        watch.send(:_init, handle, described)
        watch
      end
    end

    # The changes within +wait+ seconds, as [type, key, value, sequence] Arrays.
    def _next(wait)
      data, = Native.take(Native.libkv_watch_next(@handle.id, wait.to_f))
      keep_alive
      Data.parse(data).each { |event| event[0] = event[0].to_sym }
    end

    def stop
      stopped = Native.libkv_watch_stop(@handle.id)
      keep_alive
      raise Error, "libkv internal error: watch handle #{@handle.id} is closed" if stopped.negative?

      @stopped = true
    end

    def stopped?
      @stopped
    end

    def coalesces?
      @coalesces
    end

    private

    def _init(handle, described)
      @handle = handle
      @coalesces = described.fetch('coalesces')
      @stopped = false
    end

    # See LibKV::Lock#keep_alive.
    def keep_alive
      @handle
    end
  end
end
