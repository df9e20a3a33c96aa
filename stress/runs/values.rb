# frozen_string_literal: true

# Hostile values (0 bytes, 10 MiB, 1,000 levels of nesting, bytes that are not
# UTF-8, NUL bytes, huge Hashes, ...) put and read back with get and atomic_get on
# every store, each store in a process of its own, under MRI (the extension) and
# under JRuby (the C ABI library through FFI, as puppetserver runs libkv): each
# value reads back exactly, or its put is refused with an error naming the key;
# the Ruby process never crashes.
Stress.define('values', 'hostile values on every store, MRI and JRuby: exact, or refused naming the key; never a crash') do |run, random|
  engines = [:mri]
  missing = Stress.jruby_missing
  missing ? run.fail!("JRuby cannot run the values: #{missing}") : engines << :jruby
  engines.each do |engine|
    %w[mock file etcd consul].each do |name|
      who = "#{name} (#{engine == :mri ? 'MRI' : 'JRuby'})"
      store = Stress.store(name, "/values-#{name}-#{engine}")
      stderr = File.join(Stress.tmpdir('values'), 'stderr')
      pid, out = Stress.spawn_worker('values', store.merge(seed: random.rand(1 << 30), timeout: 30.0),
                                     engine: engine, err: stderr)
      status = Stress.wait_all([pid], 300)[pid]
      results = Stress.result_of(out)
      crashed = status.nil? || !status.success? || results.nil?
      run.check(!crashed, "#{who}: the Ruby process did not finish cleanly: #{status.inspect}; #{Stress.tail_of(stderr)}")
      next if crashed

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
  end
end
