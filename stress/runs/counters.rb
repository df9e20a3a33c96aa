# frozen_string_literal: true

# 8 OS processes x 500 atomic_get/atomic_put increments of one key: the final
# value is exactly 4,000. And 8 processes atomic_create-ing the same keys: each
# key has exactly one creator, whose value it holds.
Stress.define('counters', '8 processes x 500 increments of one key; 8 processes atomic_create the same keys') do |run, _random|
  processes = 8
  increments = Stress.quick? ? 100 : 500
  rounds = Stress.quick? ? 20 : 100
  %w[file etcd consul sqlite].each do |name|
    store = Stress.store(name, "/counters-#{name}")

    input = store.merge(key: '/counter', increments: increments, start_at: Time.now.to_f + 2.0)
    workers = Array.new(processes) { |id| Stress.spawn_worker('counter', input.merge(id: id)) }
    statuses = Stress.wait_all(workers.map(&:first), 300)
    seconds = Time.now.to_f - input[:start_at]
    results = workers.map { |_, out| Stress.result_of(out) }
    final = Stress.open(store).get('/counter')
    expected = processes * increments
    attempts = results.compact.sum { |r| r['attempts'] }
    run.say(format('%-6s %d processes x %d increments: final value %s (expected %d), %d attempts ' \
                   '(%d retried after a conflict), %.1f s, %.0f increments/s',
                   name, processes, increments, final.inspect, expected, attempts, attempts - expected,
                   seconds, expected / seconds))
    run.check(statuses.values.all? { |s| s&.success? }, "#{name}: a counter process failed or hung")
    run.failures!(results.compact.flat_map { |r| r['errors'] }.map { |e| "#{name}: #{e}" }, shown: 3)
    run.tally(expected, final == expected ? [] : ["#{name}: the counter ended at #{final.inspect}, not #{expected}"])
    # 8 processes released at the same moment conflict again and again (100-250
    # retries on the file store, whose lock serializes most of each increment, and
    # over 10,000 on etcd and Consul; some 35 on the file store with QUICK=1): none
    # at all means they did not race, and the exact count proved nothing.
    run.check(results.compact.size < processes || attempts > expected,
              "#{name}: no atomic_put was ever retried after a conflict: the #{processes} processes did not race")

    keys = Array.new(rounds) { |r| "/create/#{r}" }
    input = store.merge(keys: keys, start_at: Time.now.to_f + 2.0)
    workers = Array.new(processes) { |id| Stress.spawn_worker('create', input.merge(id: id)) }
    statuses = Stress.wait_all(workers.map(&:first), 120)
    won = workers.map { |_, out| (Stress.result_of(out) || {}).fetch('won', []) }
    run.check(statuses.values.all? { |s| s&.success? }, "#{name}: an atomic_create process failed or hung")
    kv = Stress.open(store)
    failed = keys.each_with_object([]) do |key, bad|
      creators = won.each_index.select { |id| won[id].include?(key) }
      stored = kv.get(key)
      next if creators.size == 1 && stored == creators.first

      bad << "#{name}: #{key} was created by processes #{creators.inspect} and holds #{stored.inspect}"
    end
    run.tally(keys.size, failed)
    run.say(format('%-6s %d processes atomic_create the same %d keys: %d keys with one creator holding its value; ' \
                   'keys created per process %s', name, processes, rounds, rounds - failed.size, won.map(&:size).inspect))
  end
end
