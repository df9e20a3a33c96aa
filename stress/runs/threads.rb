# frozen_string_literal: true

# 16 Ruby threads sharing one store object, each mixing every operation, in
# worker processes with deadlines: under MRI (the extension, which releases the
# GVL around I/O; a process per store) and under JRuby (the C ABI library through
# FFI, threads truly in parallel as in puppetserver; one JVM for the four stores,
# half the iterations). Every call works, each thread reads its own writes, the
# shared counter is exact, and each contested atomic_create has exactly one
# winner, whose value the key holds.
Stress.define('threads', '16 Ruby threads sharing one store object, MRI and JRuby') do |run, _random|
  threads = 16
  iterations = Stress.quick? ? 20 : 100
  deadline = 150
  names = %w[mock file etcd consul]
  jobs = names.map { |name| [:mri, [name], iterations] }
  missing = Stress.jruby_missing
  missing ? run.fail!("JRuby cannot run the threads: #{missing}") : jobs << [:jruby, names, iterations / 2]
  jobs.each do |engine, job_names, rounds|
    ruby = engine == :mri ? 'MRI' : 'JRuby'
    stores = job_names.map { |name| Stress.store(name, "/threads-#{name}-#{engine}").merge(name: name) }
    stderr = File.join(Stress.tmpdir('threads'), 'stderr')
    input = { stores: stores, threads: threads, iterations: rounds, timeout: 30.0, deadline: deadline }
    pid, out = Stress.spawn_worker('threads', input, engine: engine, err: stderr)
    status = Stress.wait_all([pid], (deadline * job_names.size) + 60)[pid]
    result = Stress.result_of(out)
    unless status&.success? && result
      run.fail!("#{job_names.join(', ')} (#{ruby}): the threads' process failed or hung: #{status.inspect}; " \
                "#{Stress.tail_of(stderr)}")
      next
    end
    job_names.each do |name|
      who = "#{name} (#{ruby})"
      mix = result['stores'][name]
      if mix.nil? || mix['error']
        run.fail!("#{who}: the threads did not run: #{mix.inspect[0, 300]}")
        next
      end
      if mix['hung'].positive?
        run.fail!("#{who}: #{mix['hung']} threads still ran after #{deadline} s (deadlock?)")
        run.failures!(mix['failures'].map { |f| "#{who}: #{f}" })
        next
      end
      run.tally(threads * rounds, mix['failures'].map { |f| "#{who}: #{f}" })
      counter = mix['counter']
      run.check(counter == threads * rounds, "#{who}: the counter is #{counter.inspect}, not #{threads * rounds}")
      contested = Array.new(rounds) do |i|
        outcomes = mix['creates'].map { |c| c[i] }
        winners = outcomes.each_index.select { |t| outcomes[t] == true }
        next nil if outcomes.all? { |o| [true, false].include?(o) } && winners.size == 1 &&
                    mix['stored'][i] == winners.first

        "#{who}: /create/#{i}: atomic_create returned #{outcomes.inspect} to the threads, and the key holds " \
          "#{mix['stored'][i].inspect}"
      end
      run.tally(rounds, contested.compact)
      run.check(mix['left'].zero?, "#{who}: deletetree left #{mix['left']} keys")
      total = mix['calls'].sum
      run.say(format('%-14s %d threads x %d iterations: %d calls in %.1f s (%.0f calls/s); counter %s; ' \
                     '%d contested keys with exactly one creator holding its value',
                     who, threads, rounds, total, mix['seconds'], total / mix['seconds'], counter.inspect,
                     rounds - contested.compact.size))
    end
  end
end
