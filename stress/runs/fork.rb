# frozen_string_literal: true

# A store opened and in use, then forked while a thread of the parent keeps
# calling it: children use the inherited store object while the parent goes on
# using it too. Every child ends within its deadline (no deadlock), every call
# works on both sides, and the increments of all of them add up.
Stress.define('fork', 'fork while a thread calls the store; child and parent use it at once') do |run, _random|
  rounds = Stress.quick? ? 2 : 5
  children = 8
  increments = 20
  deadline = 60
  %w[mock file etcd consul].each do |name|
    store = Stress.open(Stress.store(name, "/fork-#{name}"))
    store.put('/before', 'fork')
    stop = false
    parent_calls = 0
    parent_errors = []
    increment = lambda do |kv|
      loop do
        current = kv.atomic_get('/counter')
        break if kv.atomic_put('/counter', current['value'].to_i + 1, current)
      end
    end
    hammer = Thread.new do
      until stop
        begin
          increment.call(store)
          store.get('/before')
          parent_calls += 2
        rescue LibKV::Error => e
          parent_errors << e.message
        end
      end
    end
    forked = 0
    failed = []
    started = Stress.monotonic
    rounds.times do |round|
      pids = Array.new(children) do |c|
        forked += 1
        Process.fork do
          code = 1
          begin
            raise "lost the value put before fork: #{store.get('/before').inspect}" unless store.get('/before') == 'fork'

            increments.times { increment.call(store) }
            store.put("/child/#{round}-#{c}", Process.pid)
            code = store.get("/child/#{round}-#{c}") == Process.pid ? 0 : 2
          rescue Exception => e # rubocop:disable Lint/RescueException
            warn "fork child #{round}-#{c}: #{e.class}: #{e.message}"
          ensure
            exit!(code)
          end
        end
      end
      statuses = Stress.wait_all(pids, deadline)
      statuses.each do |pid, status|
        failed << "#{name}: child #{pid} of round #{round + 1} #{status ? "exited #{status.exitstatus.inspect}" : "still ran after #{deadline} s (deadlock?)"}" unless status&.success?
      end
    end
    stop = true
    run.check(hammer.join(30), "#{name}: the parent's calling thread did not stop (deadlock?)")
    parent_errors.first(3).each { |e| run.fail!("#{name}: parent: #{e}") }
    run.tally(forked, failed)
    counter = store.get('/counter')
    child_total = forked * increments
    # A mock store lives in its process: children increment copies of it.
    if name == 'mock'
      run.check(counter == parent_calls / 2, "#{name}: the parent's counter is #{counter.inspect}, not #{parent_calls / 2}")
    else
      expected = child_total + (parent_calls / 2)
      run.check(counter == expected, "#{name}: the counter is #{counter.inspect}, not #{expected}")
    end
    run.say(format('%-6s %d children forked in %d rounds while a parent thread called the store (%d calls, %d errors); ' \
                   '%d children finished their %d increments; counter %s; %.1f s',
                   name, forked, rounds, parent_calls, parent_errors.size, forked - failed.size, increments,
                   counter.inspect, Stress.monotonic - started))
  end
end
