# frozen_string_literal: true

# A store opened and in use, then forked while a thread of the parent keeps
# calling it: children use the inherited store object while the parent goes on
# using it too. The parent is a worker process with a deadline. Every child ends
# within its deadline (no deadlock), every call works on both sides, and the
# increments of all of them add up.
Stress.define('fork', 'fork while a thread calls the store; child and parent use it at once') do |run, _random|
  rounds = Stress.quick? ? 2 : 5
  children = 8
  increments = 20
  deadline = 60
  %w[mock file etcd consul sqlite].each do |name|
    store = Stress.store(name, "/fork-#{name}")
    stderr = File.join(Stress.tmpdir('fork'), 'stderr')
    input = store.merge(rounds: rounds, children: children, increments: increments, deadline: deadline)
    started = Stress.monotonic
    pid, out = Stress.spawn_worker('fork', input, err: stderr)
    status = Stress.wait_all([pid], (rounds * deadline) + 60)[pid]
    result = Stress.result_of(out)
    unless status&.success? && result
      run.fail!("#{name}: the forking process failed or hung: #{status.inspect}; #{Stress.tail_of(stderr)}")
      next
    end
    forked = result['forked']
    failed = result['failed'].map { |f| "#{name}: #{f}" }
    run.check(result['stopped'], "#{name}: the parent's calling thread did not stop (deadlock?)")
    run.failures!(result['parent_errors'].map { |e| "#{name}: parent: #{e}" })
    run.tally(forked, failed)
    run.check(forked == rounds * children, "#{name}: #{forked} children forked, not #{rounds * children}")
    counter = result['counter']
    parent_calls = result['parent_calls']
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
                   name, forked, rounds, parent_calls, result['parent_errors'].size, forked - failed.size, increments,
                   counter.inspect, Stress.monotonic - started))
  end
end
