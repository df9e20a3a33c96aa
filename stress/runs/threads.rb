# frozen_string_literal: true

# 16 Ruby threads sharing one store object, each mixing every operation: every
# call works, each thread reads its own writes, the shared counter is exact, and
# each contested atomic_create has exactly one winner.
Stress.define('threads', '16 Ruby threads sharing one store object') do |run, _random|
  threads = 16
  iterations = Stress.quick? ? 20 : 100
  %w[mock file etcd consul].each do |name|
    store = Stress.open(Stress.store(name, "/threads-#{name}"), timeout: 30.0)
    failures = Queue.new
    calls = Queue.new
    started = Stress.monotonic
    workers = Array.new(threads) do |t|
      Thread.new do
        n = 0
        iterations.times do |i|
          key = "/own/#{t}/#{i}"
          value = { 'thread' => t, 'i' => i, 'bytes' => "#{t}-#{i}".b }
          store.put(key, value)
          failures << "#{key} read back #{store.get(key).inspect}" unless store.get(key) == value
          failures << "#{key} does not exist" unless store.exists(key)
          loop do
            n += 2
            current = store.atomic_get('/counter')
            break if store.atomic_put('/counter', current['value'].to_i + 1, current)
          end
          store.atomic_create("/create/#{i}", t) && (n += 1)
          own = store.list("/own/#{t}")
          failures << "/own/#{t} lists #{own.size} keys, not #{i + 1}" unless own.size == i + 1
          store.atomic_delete("/gone/#{t}", store.atomic_get("/gone/#{t}"))
          n += 7
        end
        store.deletetree("/own/#{t}")
        calls << n + 1
      rescue StandardError => e
        failures << "thread #{t}: #{e.class}: #{e.message}"
      end
    end
    finished = workers.map { |w| w.join(300) }
    run.check(finished.all?, "#{name}: #{finished.count(&:nil?)} threads still ran after 300 s (deadlock?)")
    total = Array.new(calls.size) { calls.pop }.sum
    seconds = Stress.monotonic - started
    counter = store.get('/counter')
    run.tally(threads * iterations, Array.new(failures.size) { "#{name}: #{failures.pop}" }.first(5))
    run.check(counter == threads * iterations, "#{name}: the counter is #{counter.inspect}, not #{threads * iterations}")
    winners = Array.new(iterations) { |i| store.get("/create/#{i}") }
    run.check(winners.all? { |w| w.is_a?(Integer) }, "#{name}: some contested atomic_create left no value: #{winners.inspect}")
    left = store.list('/own')
    run.check(left.empty?, "#{name}: deletetree left #{left.size} keys")
    run.say(format('%-6s %d threads x %d iterations: %d calls in %.1f s (%.0f calls/s); counter %s',
                   name, threads, iterations, total, seconds, total / seconds, counter.inspect))
  end
end
