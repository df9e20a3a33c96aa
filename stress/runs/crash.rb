# frozen_string_literal: true

require_relative '../crash_value'

# A writer process putting 10,000 keys (values up to 1 MiB) into the file store is
# killed with SIGKILL at random moments, many times. After each kill every key
# holds exactly the value of its last acknowledged put, or, for the one put in
# flight, the old or the new complete value; nothing empty, partial or corrupt;
# leftover temp files are never listed and are gone once the store is written again.
Stress.define('crash', 'a writer of 10,000 keys (values up to 1 MiB) killed with SIGKILL at random moments') do |run, random|
  keys = 10_000
  kills = Stress.quick? ? 8 : 40
  dir = Stress.tmpdir('crash')
  root = File.join(dir, 'store')
  url = "file://#{root}"
  ack = File.join(dir, 'acks')
  store = LibKV.open(url)
  acked = {} # key number => last acknowledged generation
  ack_bytes = 0
  next_put = [0, 1] # the put the writer makes next: key number, generation
  leftovers_seen = 0
  in_flight_new = 0

  temp_files = lambda do
    Dir.glob(File.join(root, '**', '.*@*.tmp'), File::FNM_DOTMATCH)
  end

  verify = lambda do |in_flight, label|
    listed = store.list('/crash')
    failed = []
    names = listed.keys.reject { |k| k =~ /\Ak\d+\z/ }
    failed << "#{label}: the listing holds names that are not keys: #{names.first(3).inspect}" unless names.empty?
    (0...keys).each do |i|
      value = listed["k#{i}"]
      want = acked[i]
      allowed = [want]
      allowed << in_flight[1] if in_flight && in_flight[0] == i
      gen = Stress::CrashValue.generation(value)
      if value.nil?
        next if allowed.include?(nil)

        failed << "#{label}: #{Stress::CrashValue.key(i)} is absent, but its put of generation #{want} had returned"
      elsif !allowed.include?(gen)
        failed << "#{label}: #{Stress::CrashValue.key(i)} holds generation #{gen.inspect}, expected one of #{allowed.inspect}"
      elsif value != Stress::CrashValue.make(i, gen)
        failed << "#{label}: #{Stress::CrashValue.key(i)} holds a partial or corrupt value of generation #{gen} " \
                  "(#{value.bytesize} bytes, #{value.bytes.first(24).pack('C*').inspect}...)"
      elsif in_flight && in_flight[0] == i && gen == in_flight[1] && gen != want
        in_flight_new += 1
      end
    end
    run.tally(keys, failed.first(5))
    run.say("#{label}: #{failed.size - failed.first(5).size} more failures not shown") if failed.size > 5
  end

  read_acks = lambda do
    data = File.exist?(ack) ? File.binread(ack) : ''
    fresh = data.byteslice(ack_bytes..-1).to_s
    complete = fresh.rpartition("\n").first(2).join
    ack_bytes += complete.bytesize
    complete.each_line do |line|
      i, gen = line.split.map(&:to_i)
      acked[i] = gen
      next_put = i + 1 < keys ? [i + 1, gen] : [0, gen + 1]
    end
  end

  started = Stress.monotonic
  kills.times do |n|
    input = { url: url, auth: {}, keys: keys, start_key: next_put[0], start_gen: next_put[1], last_gen: 1_000_000, ack: ack }
    pid, out = Stress.spawn_worker('crash-writer', input)
    sleep(0.15 + (random.rand * 1.2))
    Process.kill('KILL', pid)
    Process.wait(pid)
    out.join
    read_acks.call
    # The put after the last acknowledged one may have been in flight.
    verify.call(next_put, "after kill #{n + 1}")
    leftovers = temp_files.call
    leftovers_seen += leftovers.size
    run.check(leftovers.size <= 1, "after kill #{n + 1}: #{leftovers.size} temp files left, more than the one put in flight")
  end
  # A last writer finishes the pass it is in and exits by itself.
  input = { url: url, auth: {}, keys: keys, start_key: next_put[0], start_gen: next_put[1], last_gen: next_put[1], ack: ack }
  pid, out = Stress.spawn_worker('crash-writer', input)
  status = Stress.wait_all([pid], 300)[pid]
  out.join
  run.check(status&.success?, "the last writer failed: #{status.inspect}")
  read_acks.call
  verify.call(nil, 'at the end')
  left = temp_files.call
  run.check(left.empty?, "#{left.size} temp files are left after the store was written again: #{left.first(3).inspect}")
  sizes = acked.map { |i, gen| Stress::CrashValue.length(i, gen) }
  run.say(format('%d kills in %.0f s; %d puts acknowledged, up to generation %d (the keys now hold %.0f MiB, ' \
                 'the largest value %d bytes); the put in flight at a kill had completed %d times; ' \
                 '%d temp files seen after kills, %d left at the end',
                 kills, Stress.monotonic - started, File.read(ack).lines.size, acked.values.max.to_i,
                 sizes.sum / 1_048_576.0, sizes.max.to_i, in_flight_new, leftovers_seen, left.size))
end
