# frozen_string_literal: true

module LibKV
  # One change a watch hands out: +type+ (:put or :delete), +key+ (the whole
  # key), +value+ (nil for a delete) and +sequence+ (the store's sequence of the
  # change: start a later watch from it to go on after it).
  Event = Struct.new(:type, :key, :value, :sequence) do
    def put?
      type == :put
    end

    def delete?
      type == :delete
    end
  end

  # The changes to a key (Store#watch) or below a directory (Store#watchtree),
  # in order. The binding defines _next (the changes within a wait, without the
  # interpreter lock), stop, stopped? and coalesces? (true where several changes
  # between two reads come as the latest: Consul, the file store, the mock;
  # false on etcd, which hands out every change).
  #
  # #each waits in short steps, so #stop from another thread, the store's #close
  # or an interrupt (Thread#raise, Ctrl-C) ends it within about STEP seconds.
  class Watch
    include Enumerable

    # The longest single wait: how soon a stop takes effect.
    STEP = 0.05

    # Yields every change until the block breaks, #stop is called, or the store
    # is closed. Without a block, an Enumerator.
    # @yieldparam event [LibKV::Event]
    def each
      return enum_for(:each) unless block_given?

      until stopped?
        _next(STEP).each { |type, key, value, sequence| yield Event.new(type, key, value, sequence) }
      end
      self
    end

    # The changes that came within +timeout+ seconds (an empty Array when none
    # did, or the watch was stopped), waiting in steps of STEP.
    # @return [Array<LibKV::Event>]
    def next_events(timeout = STEP)
      raise TypeError, "timeout must be a number of seconds, not #{timeout.class}" unless timeout.is_a?(Numeric)

      deadline = Process.clock_gettime(Process::CLOCK_MONOTONIC) + timeout
      loop do
        left = deadline - Process.clock_gettime(Process::CLOCK_MONOTONIC)
        events = _next(left.clamp(0, STEP))
        return events.map { |type, key, value, sequence| Event.new(type, key, value, sequence) } unless events.empty?
        return [] if left <= STEP || stopped?
      end
    end

    def inspect
      "#<LibKV::Watch#{' stopped' if stopped?}#{' coalescing' if coalesces?}>"
    end
    alias to_s inspect
  end
end
