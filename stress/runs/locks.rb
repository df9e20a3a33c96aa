# frozen_string_literal: true

# Locks and keys that expire, under load and crashes, on file, etcd, Consul and
# SQLite.
#
# 8 processes take one lock again and again, each section a plain get and put of
# a counter (no compare-and-swap), while a holder or waiter is
# killed with SIGKILL at random moments and another process takes its place. The
# counter ends equal to the sections logged as done, plus at most one per kill
# (a process killed between its put and its log line); no two logged sections
# overlap in time; fences grow from one section to the next.
#
# Then a writer puts 20 keys with the shortest ttl, each every one and a half
# ttl (so each lapses a while between writes), while this process lists and gets
# them: no read ever returns a generation of a key after its ttl has passed (the
# store's bound added: etcd expires leases in rounds).
Stress.define('locks', '8 processes x one lock with SIGKILLs; ttl keys read under load') do |run, random|
  seconds = Stress.quick? ? 5 : 10
  { 'file' => [1, 0.05], 'etcd' => [2, 1.5], 'consul' => [1, 0.05], 'sqlite' => [1, 0.05] }.each do |name, (ttl, bound)|
    store = Stress.store(name, "/locks-#{name}")
    kv = Stress.open(store)
    dir = Stress.tmpdir("locks-#{name}")
    stop = File.join(dir, 'stop')
    kv.put('/counter', 0)
    input = store.merge(key: '/locks/counter', counter: '/counter', ttl: ttl, stop: stop)
    spawn = ->(n) { Stress.spawn_worker('lock-sections', input.merge(log: File.join(dir, "log.#{n}"), seed: random.rand(1 << 30))) }
    workers = Array.new(8) { |n| spawn.call(n) }
    killed = 0
    deadline = Stress.monotonic + seconds
    while Stress.monotonic < deadline
      sleep(0.3 + random.rand * 1.2)

      n = random.rand(workers.size)
      Process.kill('KILL', workers[n].first)
      Stress.wait_all([workers[n].first], 10)
      killed += 1
      workers[n] = spawn.call("#{n}.#{killed}")
    end
    File.write(stop, '')
    statuses = Stress.wait_all(workers.map(&:first), 120 + ttl * 2)
    run.check(statuses.values.all? { |s| s&.success? }, "#{name}: a lock process failed or hung")
    sections = Dir[File.join(dir, 'log.*')].flat_map { |f| File.readlines(f).map { |l| l.split.map(&:to_f) } }
    sections.sort_by!(&:first)
    counter = kv.get('/counter')
    failed = []
    unless counter.is_a?(Integer) && counter >= sections.size && counter <= sections.size + killed
      failed << "#{name}: the counter is #{counter.inspect} after #{sections.size} sections logged and #{killed} kills"
    end
    sections.each_cons(2) do |(_, e1, f1), (s2, _, f2)|
      failed << "#{name}: a section started at #{s2} before the one of fence #{f1.to_i} ended at #{e1}" if s2 < e1
      failed << "#{name}: fence #{f2.to_i} after #{f1.to_i}" unless f2 > f1
      break if failed.size > 5
    end
    run.tally(sections.size, failed)
    run.say(format('%-6s 8 processes, %d s: %d sections under the lock (%.0f/s), %d holders or waiters killed, ' \
                   'counter %s', name, seconds, sections.size, sections.size / seconds.to_f, killed, counter.inspect))

    # Keys with a ttl, read under load: never a generation past its time.
    ttl_dir = '/ttl'
    log = File.join(dir, 'ttl-log')
    tstop = File.join(dir, 'ttl-stop')
    writer = Stress.spawn_worker('ttl-writer', store.merge(dir: ttl_dir, keys: 20, ttl: ttl, pause: ttl / 4.0, every: 6,
                                                           log: log, stop: tstop))
    seen = []
    absent = 0
    until_ms = (Time.now.to_f + [seconds, ttl * 3].max) * 1000
    while Time.now.to_f * 1000 < until_ms
      read_at = Time.now.to_f * 1000
      kv.list(ttl_dir).each { |rel, value| seen << [rel, value.split.last.to_i, read_at] }
      key = "#{ttl_dir}/k#{random.rand(20)}"
      value = kv.get(key)
      if value
        seen << [key.sub("#{ttl_dir}/", ''), value.split.last.to_i, read_at]
      else
        absent += 1
      end
    end
    File.write(tstop, '')
    status = Stress.wait_all([writer.first], 60 + ttl * 2)[writer.first]
    run.check(status&.success?, "#{name}: the ttl writer failed or hung")
    ends = {}
    File.readlines(log).each do |line|
      key, gen, end_ms = line.split
      ends[[key.sub("#{ttl_dir}/", ''), gen.to_i]] = end_ms.to_i
    end
    # A read that began after a generation's ttl had run out must not see it
    # (its end is taken after its put returned: no earlier than the store's).
    late = seen.select do |rel, gen, read_at|
      ending = ends[[rel, gen]]
      ending && read_at > ending + bound * 1000
    end
    run.tally(seen.size, late.first(5).map { |rel, gen, at| "#{name}: #{rel} generation #{gen} read at #{at.round} ms, after its ttl" })
    run.check(absent.positive?, "#{name}: no key was ever found lapsed: the ttl was not tested")
    run.say(format('%-6s ttl %d s: %d puts, %d keys read, %d found lapsed, %d past their time',
                   name, ttl, ends.size, seen.size, absent, late.size))
  end
end
