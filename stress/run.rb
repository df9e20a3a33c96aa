# frozen_string_literal: true

# libkv's stress and fault suite: the guarantees of DESIGN.md under load, faults
# and hostile input, on real stores on 127.0.0.1. `rake stress` builds what it
# needs and runs every run; `ruby stress/run.rb RUN...` runs some, QUICK=1 fewer
# cases, STRESS_SEED=N replays a seed, STRESS_BUDGET=SECONDS (default 720) bounds
# the whole suite. Each run prints what it tried and what it found; a summary
# table (run, cases, failures, seconds, parts skipped) ends the output, and the
# exit status is 1 when any run found a failure, reported no case, or did not
# finish within the budget.
#
# The runs execute in a child process (its own process group, with every worker
# and server it starts); this process only collects each run's record from it
# and keeps the budget. Past the budget it stops the child and everything it
# started, marks the unfinished run failed, and prints the table all the same.

require_relative 'stress'
Dir[File.join(__dir__, 'runs', '*.rb')].sort.each { |f| require f }

seed = (ENV['STRESS_SEED'] || Random.new_seed % 1_000_000_000).to_i
budget = (ENV['STRESS_BUDGET'] || 720).to_f
selected = ARGV.empty? ? Stress.runs.keys : ARGV
unknown = selected - Stress.runs.keys
abort "unknown run #{unknown.join(', ')}; runs: #{Stress.runs.keys.join(', ')}" unless unknown.empty?

puts "libkv stress suite, #{Time.now.utc.strftime('%F %R')} UTC, seed #{seed}#{Stress.quick? ? ', quick' : ''}, " \
     "budget #{budget.round} s"
$stdout.flush
started = Stress.monotonic
Stress.scratch # made here, so that this process removes it whatever becomes of the child

records, report = IO.pipe
child = fork do
  records.close
  Process.setpgid(0, 0)
  $stdout.sync = true
  # Everything the runs, their workers and servers leave in the temp directory
  # goes below the scratch directory, which this process removes.
  ENV['TMPDIR'] = Stress.scratch
  # Stopped past the budget: end quietly, running the at_exit handlers that stop
  # the servers.
  trap('TERM') do
    Thread.list.each { |t| t.report_on_exception = false }
    exit 1
  end
  selected.each do |name|
    summary, block = Stress.runs.fetch(name)
    run = Stress::Run.new(name, seed)
    report.puts(JSON.generate('started' => name))
    puts "\n#{name}: #{summary}"
    run.timed do
      block.call(run, Random.new(seed))
    rescue StandardError => e
      run.fail!("the run itself failed: #{e.class}: #{e.message}\n    #{Array(e.backtrace).first(6).join("\n    ")}")
    end
    run.fail!('the run reported 0 cases: it checked nothing') if run.cases.zero?
    $stdout.flush
    report.puts(JSON.generate('finished' => run.to_h))
  end
  report.close
end
report.close

# Stops the child and every process of its group: TERM (the child's at_exit
# handlers stop its servers), then KILL what is left.
stop_child = lambda do
  Stress.signal_group('TERM', child)
  status = Stress.wait_all([child], 10)[child]
  Stress.signal_group('KILL', child)
  status
end
%w[INT TERM].each do |signal|
  trap(signal) do
    stop_child.call
    exit!(1)
  end
end

finished = []
current = nil
buffer = +''
over_budget = false
loop do
  left = started + budget - Stress.monotonic
  if left <= 0
    over_budget = true
    break
  end
  next unless IO.select([records], nil, nil, left)

  chunk = records.read_nonblock(1 << 16, exception: false)
  break if chunk.nil?
  next unless chunk.is_a?(String)

  buffer << chunk
  while (line = buffer.slice!(/\A[^\n]*\n/))
    record = JSON.parse(line)
    if record['started']
      current = record['started']
    else
      finished << record['finished']
      current = nil
    end
  end
end
records.close

if over_budget
  puts "\nThe suite ran past its budget of #{budget.round} s: stopping it."
  stop_child.call
  status = nil
else
  status = Stress.wait_all([child], 60)[child]
  # Whatever the child's group still holds (a worker or server left behind).
  Stress.signal_group('KILL', child)
end

if current
  why = over_budget ? "did not finish within the suite's budget of #{budget.round} s (hung?)" : "ended the runner (#{status.inspect})"
  finished << { 'name' => current, 'cases' => 0, 'failed' => 1, 'failures' => ["the run #{why}"], 'skipped' => [],
                'seconds' => Stress.monotonic - started - finished.sum { |r| r['seconds'] } }
elsif !over_budget && !status&.success?
  finished << { 'name' => 'runner', 'cases' => 0, 'failed' => 1, 'failures' => ["the runner failed: #{status.inspect}"],
                'skipped' => [], 'seconds' => 0.0 }
end
(selected - finished.map { |r| r['name'] }).each do |name|
  finished << { 'name' => name, 'cases' => 0, 'failed' => 1, 'failures' => ['not run: the suite stopped before it'],
                'skipped' => [], 'seconds' => 0.0 }
end

row = '%-14s %10s %9s %9s  %s'
puts "\n#{format(row, 'run', 'cases', 'failures', 'seconds', 'skipped')}"
finished.each do |r|
  puts format(row, r['name'], r['cases'], r['failed'], format('%.1f', r['seconds']), r['skipped'].join(', ')).rstrip
end
puts format(row, 'total', finished.sum { |r| r['cases'] }, finished.sum { |r| r['failed'] },
            format('%.1f', Stress.monotonic - started), '').rstrip
failed = finished.reject { |r| r['failed'].zero? }
unless failed.empty?
  puts "\nFailures (replay with STRESS_SEED=#{seed}):"
  failed.each { |r| r['failures'].each { |m| puts "  #{r['name']}: #{m}" } }
  exit 1
end
