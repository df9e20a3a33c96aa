# frozen_string_literal: true

# Hostile values (0 bytes, 10 MiB, 1,000 levels of nesting, bytes that are not
# UTF-8, NUL bytes, huge Hashes, ...) put and read back with get and atomic_get on
# every store, under MRI (the extension; each store in a process of its own) and
# under JRuby (the C ABI library through FFI, as puppetserver runs libkv; one JVM
# for the four stores): each value reads back exactly, or its put is refused with
# an error naming the key; the Ruby process never crashes.
Stress.define('values', 'hostile values on every store, MRI and JRuby: exact, or refused naming the key; never a crash') do |run, random|
  names = %w[mock file etcd consul]
  jobs = names.map { |name| [:mri, [name]] }
  missing = Stress.jruby_missing
  missing ? run.fail!("JRuby cannot run the values: #{missing}") : jobs << [:jruby, names]
  jobs.each do |engine, job_names|
    ruby = engine == :mri ? 'MRI' : 'JRuby'
    stores = job_names.map do |name|
      Stress.store(name, "/values-#{name}-#{engine}").merge(name: name, seed: random.rand(1 << 30))
    end
    stderr = File.join(Stress.tmpdir('values'), 'stderr')
    started = Stress.monotonic
    pid, out = Stress.spawn_worker('values', { stores: stores, timeout: 30.0 }, engine: engine, err: stderr)
    status = Stress.wait_all([pid], 300)[pid]
    result = Stress.result_of(out)
    crashed = status.nil? || !status.success? || result.nil?
    run.check(!crashed, "#{job_names.join(', ')} (#{ruby}): the Ruby process did not finish cleanly: " \
                        "#{status.inspect}; #{Stress.tail_of(stderr)}")
    next if crashed

    job_names.each do |name|
      who = "#{name} (#{ruby})"
      results = result['stores'][name]
      unless results.is_a?(Array)
        run.fail!("#{who}: the values were not all tried: #{results.inspect[0, 300]}")
        next
      end
      exact = results.count { |r| r['outcome'] == 'exact' }
      refused = results.select { |r| r['outcome'].start_with?('refused: ') }
      results.each do |r|
        # A refusal is the put's own error, and says which key.
        ok = r['outcome'] == 'exact' || (r['outcome'].start_with?('refused: ') && r['outcome'].include?(r['key']))
        run.check(ok, "#{who}: #{r['case']}: #{r['outcome'][0, 300]}")
      end
      run.say("#{who}: #{results.size} values, #{exact} read back exactly, #{refused.size} refused:")
      refused.each { |r| run.say("    #{r['case']}: #{r['outcome'].sub('refused: ', '')[0, 220]}") }
    end
    run.say(format('%s: %s in %.1f s', ruby, job_names.join(', '), Stress.monotonic - started)) if engine == :jruby
  end
end
