# frozen_string_literal: true

module LibKV
  # One open store. The binding (ext/libkv on MRI, libkv/ffi.rb on JRuby) defines
  # the class and its underscored methods; these wrappers give them keyword
  # options. Obtain instances with LibKV.open.
  #
  # +serialize+ (default true) keeps the type of a value: an Integer put comes back
  # an Integer, a binary (BINARY-encoded) String a binary String. With false the
  # value is stored as the String given and read back as a String.
  #
  # #close (from the binding) lets the store go at once rather than when the object
  # is garbage; later calls raise LibKV::ClosedError, and #closed? says so.
  class Store
    # @return [Object, nil] the value, or nil when the key is absent
    def get(key, serialize: true)
      _get(string(key, :key), boolean(serialize))
    end

    # With +ttl+ (whole seconds), the key disappears once +ttl+ has passed
    # without another write of it (see the README for each store's bounds).
    # @return [true]
    def put(key, value, serialize: true, ttl: nil)
      _put(string(key, :key), value, boolean(serialize), ttl(ttl))
    end

    # @return [true] also when the key was absent
    def delete(key)
      _delete(string(key, :key))
    end

    # @return [Boolean]
    def exists(key)
      _exists(string(key, :key))
    end
    alias exists? exists

    # @return [Hash] key relative to +dir+ => value, for every key below +dir+
    def list(dir, serialize: true)
      _list(string(dir, :dir), boolean(serialize))
    end

    # Deletes every key below +dir+.
    # @return [true]
    def deletetree(dir)
      _deletetree(string(dir, :dir))
    end

    # @return [Boolean] true if created, false if the key existed
    def atomic_create(key, value, serialize: true, ttl: nil)
      _atomic_create(string(key, :key), value, boolean(serialize), ttl(ttl))
    end

    # @return [Hash] { "value" => value, "sequence" => Integer }, or
    #   LibKV.empty_value when the key is absent
    def atomic_get(key, serialize: true)
      _atomic_get(string(key, :key), boolean(serialize))
    end

    # Stores +value+ only if the key still has +previous+'s sequence.
    # @param previous [Hash, Integer] what atomic_get returned (or its sequence)
    # @return [Boolean]
    def atomic_put(key, value, previous, serialize: true, ttl: nil)
      _atomic_put(string(key, :key), value, previous, boolean(serialize), ttl(ttl))
    end

    # Deletes the key only if it still has +previous+'s sequence; true when the key
    # is absent and +previous+ is empty_value.
    # @return [Boolean]
    def atomic_delete(key, previous)
      _atomic_delete(string(key, :key), previous)
    end

    # @return [Hash] key relative to +dir+ => { "value" => ..., "sequence" => ... }
    def atomic_list(dir, serialize: true)
      _atomic_list(string(dir, :dir), boolean(serialize))
    end

    # Takes the lock at +key+, waiting at most +timeout+ seconds (0: one try)
    # while another holds it. The store keeps it for +ttl+ seconds; with +renew+
    # (the default) a thread of the core renews it while this process lives, until
    # LibKV::Lock#unlock. The key holds the lock's owner meanwhile.
    # @return [LibKV::Lock]
    # @raise [LibKV::LockTimeoutError] not taken within +timeout+
    def newlock(key, ttl: LOCK_TTL, timeout: LOCK_TIMEOUT, renew: true)
      raise TypeError, "timeout must be a number of seconds, not #{timeout.class}" unless timeout.is_a?(Numeric)

      _newlock(string(key, :key), ttl(ttl, required: true), timeout.to_f, boolean(renew, :renew))
    end

    # Runs the block holding the lock at +key+ (see #newlock), releases it (also
    # when the block raises) and returns the block's value. A lock lost while the
    # block ran (not renewed within +ttl+: the process stalled, the store was
    # unreachable) raises LibKV::LockLostError once the block returns: its work
    # may have overlapped another holder's.
    # @yieldparam lock [LibKV::Lock]
    def lock(key, ttl: LOCK_TTL, timeout: LOCK_TIMEOUT)
      raise ArgumentError, 'LibKV::Store#lock needs a block' unless block_given?

      held = newlock(key, ttl: ttl, timeout: timeout)
      finished = false
      begin
        result = yield held
        finished = true
      ensure
        if finished
          held.unlock
        else
          # The block raised (or broke out): its own exception says more.
          begin
            held.unlock
          rescue LibKV::Error
            nil
          end
        end
      end
      result
    end

    # Releases the lock +owner+ holds at +key+: what LibKV::Lock#to_h tells, from
    # any process. False when +owner+ no longer holds it.
    # @return [Boolean]
    def unlock(key, owner)
      raise TypeError, "owner must be a String, not #{owner.class}" unless owner.is_a?(String)

      _unlock(string(key, :key), owner)
    end

    # The changes to +key+ after the sequence +from+ (nil: from now), in order,
    # yielded as LibKV::Event until the block breaks, the watch is stopped
    # (LibKV::Watch#stop, from any thread) or the store closed. Without a block,
    # the LibKV::Watch (Enumerable; #next_events(timeout) waits for the next).
    # etcd hands out every change; Consul, the file store and the mock the
    # latest state after each change they notice (see LibKV::Watch#coalesces?).
    # @yieldparam event [LibKV::Event]
    def watch(key, from: nil, serialize: true, &block)
      start_watch(string(key, :key), false, from, serialize, &block)
    end

    # #watch for every key below +dir+ (the events carry whole keys).
    def watchtree(dir, from: nil, serialize: true, &block)
      start_watch(string(dir, :dir), true, from, serialize, &block)
    end

    # Waits until +key+'s sequence differs from +previous+'s (what atomic_get
    # returned, or a sequence; nil: the key as the call starts), at most
    # +timeout+ seconds, and returns what atomic_get returns then: the changed
    # key, or the unchanged one at the timeout. Puppet's libkv::watch.
    # @return [Hash] { "value" => ..., "sequence" => Integer }
    def changed(key, previous: nil, timeout: WATCH_TIMEOUT, serialize: true)
      _changed(string(key, :key), false, previous, seconds(timeout), boolean(serialize))
    end

    # #changed for everything below +dir+: +previous+ is what atomic_list
    # returned; returns what atomic_list returns. Puppet's libkv::watchtree.
    # @return [Hash] key relative to +dir+ => { "value" => ..., "sequence" => ... }
    def changedtree(dir, previous: nil, timeout: WATCH_TIMEOUT, serialize: true)
      _changed(string(dir, :dir), true, previous, seconds(timeout), boolean(serialize))
    end

    # @return [Hash] { "value" => nil, "sequence" => 0 }
    def empty_value
      LibKV.empty_value
    end

    def inspect
      "#<#{self.class.name} #{url}>"
    end
    alias to_s inspect

    # A lock's defaults: kept 60 s by the store, waited for 30 s.
    LOCK_TTL = 60
    LOCK_TIMEOUT = 30
    # How long #changed waits by default.
    WATCH_TIMEOUT = 30

    # Closes the store; a watch on it stops after the wait under way.
    def close
      @watches&.each_key(&:stop)
      _close
    end

    private

    def start_watch(target, tree, from, serialize)
      unless from.nil? || (from.is_a?(Integer) && from >= 0)
        raise TypeError, "from must be a sequence (an Integer >= 0) or nil, not #{from.inspect}"
      end

      watch = _watch(target, tree, from, boolean(serialize))
      # Weakly: a watch left to the garbage collector goes with it.
      (@watches ||= ObjectSpace::WeakMap.new)[watch] = watch
      return watch unless block_given?

      begin
        watch.each { |event| yield event }
      ensure
        watch.stop
      end
      nil
    end

    def seconds(timeout)
      return timeout.to_f if timeout.is_a?(Numeric)

      raise TypeError, "timeout must be a number of seconds, not #{timeout.inspect}"
    end

    def boolean(flag, name = :serialize)
      return flag if flag == true || flag == false

      raise TypeError, "#{name} must be true or false, not #{flag.inspect}"
    end

    def ttl(ttl, required: false)
      return ttl if ttl.is_a?(Integer) || (ttl.nil? && !required)

      raise TypeError, "ttl must be a whole number of seconds (an Integer), not #{ttl.inspect}"
    end

    # A key or dir argument: a String (of any encoding that holds a valid key).
    def string(value, name)
      return value if value.is_a?(String)

      raise ArgumentError, "#{name} must be a String like \"/dir/name\", not #{value.nil? ? 'nil' : value.class}"
    end
  end

  # mock://[NAME]: in memory, for as long as the object lives.
  class Mock < Store; end

  # file:///ROOT: one file per key under ROOT.
  class File < Store; end

  # legacy-simp6://: the file store in SIMP 6's simp_autofiles directory.
  class LegacySimp6 < File; end

  # consul://HOST:PORT/PREFIX and consul+ssl://...
  class Consul < Store; end

  # etcd://HOST:PORT[,HOST:PORT...]/PREFIX and etcd+ssl://...
  class Etcd < Store; end

  # zookeeper://HOST:PORT[,HOST:PORT...]/PREFIX
  class ZooKeeper < Store; end

  # sqlite:///ABSOLUTE/FILE.db: one SQLite database file on this machine.
  class SQLite < Store; end
end
