# frozen_string_literal: true

# libkv's stress and fault suite: the guarantees of DESIGN.md under load, faults
# and hostile input, on real stores on 127.0.0.1. `rake stress` builds what it
# needs and runs every run; `ruby stress/run.rb RUN...` runs some, QUICK=1 fewer
# cases, STRESS_SEED=N replays a seed. Each run prints what it tried and what it
# found; a summary table (run, cases, failures) ends the output, and the exit
# status is 1 when any run found a failure.

require_relative 'stress'
Dir[File.join(__dir__, 'runs', '*.rb')].sort.each { |f| require f }

seed = (ENV['STRESS_SEED'] || Random.new_seed % 1_000_000_000).to_i
selected = ARGV.empty? ? Stress.runs.keys : ARGV
unknown = selected - Stress.runs.keys
abort "unknown run #{unknown.join(', ')}; runs: #{Stress.runs.keys.join(', ')}" unless unknown.empty?

puts "libkv stress suite, #{Time.now.utc.strftime('%F %R')} UTC, seed #{seed}#{Stress.quick? ? ', quick' : ''}"
started = Stress.monotonic
runs = selected.map do |name|
  summary, block = Stress.runs.fetch(name)
  run = Stress::Run.new(name, seed)
  puts "\n#{name}: #{summary}"
  run.timed do
    block.call(run, Random.new(seed))
  rescue StandardError => e
    run.fail!("the run itself failed: #{e.class}: #{e.message}\n    #{Array(e.backtrace).first(6).join("\n    ")}")
  end
  run
end

puts "\n#{format('%-14s %10s %9s %9s', 'run', 'cases', 'failures', 'seconds')}"
runs.each { |r| puts format('%-14s %10d %9d %9.1f', r.name, r.cases, r.failures.size, r.seconds) }
puts format('%-14s %10d %9d %9.1f', 'total', runs.sum(&:cases), runs.sum { |r| r.failures.size }, Stress.monotonic - started)
failed = runs.reject { |r| r.failures.empty? }
unless failed.empty?
  puts "\nFailures (replay with STRESS_SEED=#{seed}):"
  failed.each { |r| r.failures.each { |m| puts "  #{r.name}: #{m}" } }
  exit 1
end
