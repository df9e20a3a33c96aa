# frozen_string_literal: true

require_relative '../crash_value'

# A writer process putting 10,000 keys (values up to 1 MiB) into the file store,
# then into an SQLite store, is killed with SIGKILL at random moments, many
# times. Generation 1 of every key is written first, so every put a killed writer makes overwrites a complete old
# value. After each kill every key holds exactly the value of its last
# acknowledged put, or, for the one put in flight, the old or the new complete
# value; nothing empty, partial or corrupt; leftover temp files are never listed
# and are gone once the store is written again. Each writer must really die of
# the SIGKILL (not end by itself), and the acknowledged puts must advance.
Stress.define('crash', 'a writer of 10,000 keys (values up to 1 MiB) killed with SIGKILL at random moments, file and SQLite') do |run, random|
  %w[file sqlite].each do |name|
    keys = 10_000
    kills = Stress.quick? ? 8 : 40
    dir = Stress.tmpdir("crash-#{name}")
    root = File.join(dir, 'store')
    url = name == 'file' ? "file://#{root}" : "sqlite://#{root}.db"
    ack = File.join(dir, 'acks')
    ready = File.join(dir, 'ready')
    stderr = File.join(dir, 'stderr')
    store = LibKV.open(url)
    acked = {} # key number => last acknowledged generation
    ack_bytes = 0
    ack_count = 0
    next_put = [0, 1] # the put the writer makes next: key number, generation
    leftovers_seen = 0
    in_flight_new = 0
    interrupted = 0 # kills that left the in-flight overwrite's temp file, with the old value in place
    advanced = 0 # kills before which the writer had acknowledged at least one put

    # The file store's temp files (an SQLite store has none beside its database).
    temp_files = lambda do
      Dir.glob(File.join(root, '**', '.*@*.tmp'), File::FNM_DOTMATCH)
    end

    # Checks every key that has been written; returns the in-flight key's generation.
    verify = lambda do |in_flight, label|
      listed = store.list('/crash')
      failed = []
      names = listed.keys.reject { |k| k =~ /\Ak\d+\z/ }
      failed << "#{label}: the listing holds names that are not keys: #{names.first(3).inspect}" unless names.empty?
      checked = 0
      in_flight_gen = nil
      (0...keys).each do |i|
        value = listed["k#{i}"]
        want = acked[i]
        allowed = [want]
        allowed << in_flight[1] if in_flight && in_flight[0] == i
        gen = Stress::CrashValue.generation(value)
        in_flight_gen = gen if in_flight && in_flight[0] == i
        if value.nil?
          # A key never written, and not in flight, proves nothing: not a case.
          next if want.nil? && allowed.compact.empty?

          checked += 1
          next if allowed.include?(nil)

          failed << "#{label}: #{Stress::CrashValue.key(i)} is absent, but its put of generation #{want} had returned"
          next
        end
        checked += 1
        if !allowed.include?(gen)
          failed << "#{label}: #{Stress::CrashValue.key(i)} holds generation #{gen.inspect}, expected one of #{allowed.inspect}"
        elsif value != Stress::CrashValue.make(i, gen)
          failed << "#{label}: #{Stress::CrashValue.key(i)} holds a partial or corrupt value of generation #{gen} " \
                    "(#{value.bytesize} bytes, #{value.bytes.first(24).pack('C*').inspect}...)"
        elsif in_flight && in_flight[0] == i && gen == in_flight[1] && gen != want
          in_flight_new += 1
        end
      end
      run.tally(checked, failed)
      in_flight_gen
    end

    read_acks = lambda do
      data = File.exist?(ack) ? File.binread(ack) : ''
      fresh = data.byteslice(ack_bytes..-1).to_s
      complete = fresh.rpartition("\n").first(2).join
      ack_bytes += complete.bytesize
      complete.each_line do |line|
        i, gen = line.split.map(&:to_i)
        acked[i] = gen
        ack_count += 1
        next_put = i + 1 < keys ? [i + 1, gen] : [0, gen + 1]
      end
    end

    writer = lambda do |last_gen, max_puts = nil|
      File.delete(ready) if File.exist?(ready)
      input = { url: url, auth: {}, keys: keys, start_key: next_put[0], start_gen: next_put[1], last_gen: last_gen,
                max_puts: max_puts, ack: ack, ready: ready }
      Stress.spawn_worker('crash-writer', input, err: stderr)
    end

    # Generation 1 of every key, by a writer that finishes by itself.
    started = Stress.monotonic
    pid, out = writer.call(1)
    status = Stress.wait_all([pid], 300)[pid]
    out.join
    run.check(status&.success?, "the writer of generation 1 failed: #{status.inspect}; #{Stress.tail_of(stderr)}")
    read_acks.call
    verify.call(nil, "#{name} after generation 1")
    filled = Stress.monotonic - started
    run.check(acked.size == keys, "generation 1 was acknowledged for #{acked.size} keys, not #{keys}")

    started = Stress.monotonic
    kills.times do |n|
      label = "#{name} kill #{n + 1}"
      pid, out = writer.call(1_000_000)
      # Once the writer has opened the store, a random moment: the put it makes
      # then overwrites generation 1 or later.
      deadline = Stress.monotonic + 60
      ended = nil
      until File.exist?(ready) || ended || Stress.monotonic > deadline
        ended = Process.wait2(pid, Process::WNOHANG)&.last
        sleep 0.01
      end
      sleep(0.02 + random.rand) unless ended
      before = ack_count
      unless ended
        Process.kill('KILL', pid)
        ended = Process.wait2(pid).last
      end
      out.join
      killed = ended.signaled? && ended.termsig == Signal.list['KILL']
      run.check(killed, "#{label}: the writer was not killed by the SIGKILL but ended by itself " \
                        "(#{ended.inspect}); #{Stress.tail_of(stderr)}")
      read_acks.call
      advanced += 1 if ack_count > before
      # The put after the last acknowledged one may have been in flight.
      in_flight, old = next_put, acked[next_put[0]]
      gen = verify.call(in_flight, "after #{label}")
      leftovers = temp_files.call
      leftovers_seen += leftovers.size
      run.check(leftovers.size <= 1, "after #{label}: #{leftovers.size} temp files left, more than the one put in flight")
      # The in-flight put was cut short mid-write: its temp file is left, and the
      # key still holds its complete old value.
      mine = leftovers.any? { |f| File.basename(f).start_with?(".k#{in_flight[0]}@") }
      interrupted += 1 if mine && old && gen == old
    end
    run.check(advanced * 2 > kills, "the acknowledged puts advanced before only #{advanced} of #{kills} kills")
    run.check(name != 'file' || interrupted.positive?, "file: no kill interrupted an overwrite mid-write (no temp file of the put in flight " \
                                     'was left beside its old value): the kills did not test what they should')
    kill_seconds = Stress.monotonic - started

    # A last writer makes 100 more puts (the first removes the temp file a kill
    # left) and exits by itself.
    pid, out = writer.call(1_000_000, 100)
    status = Stress.wait_all([pid], 300)[pid]
    out.join
    run.check(status&.success?, "the last writer failed: #{status.inspect}; #{Stress.tail_of(stderr)}")
    read_acks.call
    verify.call(nil, "#{name} at the end")
    left = temp_files.call
    run.check(left.empty?, "#{left.size} temp files are left after the store was written again: #{left.first(3).inspect}")
    sizes = acked.map { |i, g| Stress::CrashValue.length(i, g) }
    run.say(format('%-6s generation 1 of %d keys written in %.0f s; %d kills in %.0f s, %d of them after the writer had ' \
                   'acknowledged a put; %d puts acknowledged, up to generation %d (the keys now hold %.0f MiB, ' \
                   'the largest value %d bytes); the put in flight at a kill had completed %d times, and was cut ' \
                   'short mid-write beside its old value %d times; %d temp files seen after kills, %d left at the end',
                   name, keys, filled, kills, kill_seconds, advanced, File.read(ack).lines.size, acked.values.max.to_i,
                   sizes.sum / 1_048_576.0, sizes.max.to_i, in_flight_new, interrupted, leftovers_seen, left.size))
  end
end
