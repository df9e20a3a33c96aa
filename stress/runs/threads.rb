# frozen_string_literal: true

# 16 Ruby threads sharing one store object, each mixing every operation, in a
# worker process with a deadline: under MRI (the extension, which releases the
# GVL around I/O) and under JRuby (the C ABI library through FFI, threads truly
# in parallel, as in puppetserver). Every call works, each thread reads its own
# writes, the shared counter is exact, and each contested atomic_create has
# exactly one winner, whose value the key holds.
Stress.define('threads', '16 Ruby threads sharing one store object, MRI and JRuby') do |run, _random|
  threads = 16
  iterations = Stress.quick? ? 20 : 100
  engines = [:mri]
  missing = Stress.jruby_missing
  missing ? run.fail!("JRuby cannot run the threads: #{missing}") : engines << :jruby
  engines.each do |engine|
    %w[mock file etcd consul].each do |name|
      who = "#{name} (#{engine == :mri ? 'MRI' : 'JRuby'})"
      store = Stress.store(name, "/threads-#{name}-#{engine}")
      stderr = File.join(Stress.tmpdir('threads'), 'stderr')
      input = store.merge(threads: threads, iterations: iterations, timeout: 30.0, deadline: 150)
      pid, out = Stress.spawn_worker('threads', input, engine: engine, err: stderr)
      status = Stress.wait_all([pid], 240)[pid]
      result = Stress.result_of(out)
      unless status&.success? && result
        run.fail!("#{who}: the threads' process failed or hung: #{status.inspect}; #{Stress.tail_of(stderr)}")
        next
      end
      if result['hung'].positive?
        run.fail!("#{who}: #{result['hung']} threads still ran after 150 s (deadlock?)")
        run.failures!(result['failures'].map { |f| "#{who}: #{f}" })
        next
      end
      run.tally(threads * iterations, result['failures'].map { |f| "#{who}: #{f}" })
      counter = result['counter']
      run.check(counter == threads * iterations, "#{who}: the counter is #{counter.inspect}, not #{threads * iterations}")
      creates = result['creates']
      contested = Array.new(iterations) do |i|
        outcomes = creates.map { |c| c[i] }
        winners = outcomes.each_index.select { |t| outcomes[t] == true }
        next nil if outcomes.all? { |o| [true, false].include?(o) } && winners.size == 1 &&
                    result['stored'][i] == winners.first

        "#{who}: /create/#{i}: atomic_create returned #{outcomes.inspect} to the threads, and the key holds " \
          "#{result['stored'][i].inspect}"
      end
      run.tally(iterations, contested.compact)
      run.check(result['left'].zero?, "#{who}: deletetree left #{result['left']} keys")
      total = result['calls'].sum
      run.say(format('%-14s %d threads x %d iterations: %d calls in %.1f s (%.0f calls/s); counter %s; ' \
                     '%d contested keys with exactly one creator holding its value',
                     who, threads, iterations, total, result['seconds'], total / result['seconds'], counter.inspect,
                     iterations - contested.compact.size))
    end
  end
end
