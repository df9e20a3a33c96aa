# frozen_string_literal: true

# LibKV::Lock over the C ABI library, for lib/libkv/ffi.rb: what ext/libkv
# defines on MRI (key, owner, fence, ttl, held?, lost, unlock, detach);
# lib/libkv/lock.rb adds to_h and inspect for both bindings.

module LibKV
  # A lock this process took (LibKV::Store#newlock): a lock handle of the
  # library, which renews the lock on a thread of its own while it is held. The
  # handle is freed when this object is garbage (see Native::LockHandle); a lock
  # still held then is released in the background, as on MRI.
  class Lock
    ALLOCATE = ::Class.instance_method(:allocate)
    private_constant :ALLOCATE

    class << self
      # As on MRI, locks come only from LibKV::Store#newlock.
      def allocate
        raise TypeError, "allocator undefined for #{name}"
      end

      def new(*)
        raise TypeError, "allocator undefined for #{name}"
      end

      private

      # A Lock of +handle+ (a Native::LockHandle) that libkv_lock described.
      def _new(handle, described)
        lock = ALLOCATE.bind(self).call
        lock.send(:_init, handle, described)
        lock
      end
    end

    def key
      @key.dup
    end

    def owner
      @owner.dup
    end

    # @return [Integer]
    attr_reader :fence

    # @return [Integer] seconds
    attr_reader :ttl

    def held?
      held = Native.libkv_lock_held(@handle.id)
      keep_alive
      return held == 1 unless held.negative?

      raise Error, "libkv internal error: lock handle #{@handle.id} " \
                   "#{held == -1 ? 'is closed' : 'panicked'}"
    end

    # Why the lock was lost, or nil.
    def lost
      data, = Native.take(Native.libkv_lock_lost(@handle.id))
      keep_alive
      ::JSON.parse(data)
    end

    # Releases the lock; raises LibKV::LockLostError when it had been lost.
    # Releasing twice does nothing.
    def unlock
      Native.take(Native.libkv_lock_unlock(@handle.id))
      keep_alive
      true
    end

    # Stops renewing and leaves the lock held on the store until its ttl passes.
    def detach
      Native.take(Native.libkv_lock_detach(@handle.id))
      keep_alive
      true
    end

    private

    def _init(handle, described)
      @handle = handle
      @key = described.fetch('key').freeze
      @owner = described.fetch('owner').freeze
      @fence = described.fetch('fence')
      @ttl = described.fetch('ttl')
    end

    # Using the lock after a call keeps it reachable until the call has returned,
    # so that its finalizer cannot free the handle during the call (see
    # LibKV::Store#call).
    def keep_alive
      @handle
    end
  end
end
