# frozen_string_literal: true

# Hostile values (0 bytes, 10 MiB, 1,000 levels of nesting, bytes that are not
# UTF-8, NUL bytes, huge Hashes, ...) put and read back on every store, each store
# in a process of its own: each value reads back exactly, or is refused with a
# clear error naming the key; the Ruby process never crashes.
Stress.define('values', 'hostile values on every store: exact, or refused with a clear error; never a crash') do |run, random|
  %w[mock file etcd consul].each do |name|
    store = Stress.store(name, "/values-#{name}")
    pid, out = Stress.spawn_worker('values', store.merge(seed: random.rand(1 << 30), timeout: 30.0))
    status = Stress.wait_all([pid], 300)[pid]
    results = Stress.result_of(out)
    crashed = status.nil? || status.signaled? || !status.success? || results.nil?
    run.check(!crashed, "#{name}: the Ruby process did not finish cleanly: #{status.inspect}")
    next if crashed

    exact = results.count { |r| r['outcome'] == 'exact' }
    refused = results.select { |r| r['outcome'].start_with?('refused: ') }
    results.each do |r|
      ok = r['outcome'] == 'exact' || r['outcome'].start_with?('refused: ')
      # A clear refusal says which key and why; a refusal by the store names it too.
      ok &&= r['outcome'] !~ /\Arefused: / || r['outcome'] =~ %r{/values/\d+} || r['outcome'].include?('TypeError')
      run.check(ok, "#{name}: #{r['case']}: #{r['outcome'][0, 300]}")
    end
    run.say("#{name}: #{results.size} values, #{exact} read back exactly, #{refused.size} refused:")
    refused.each { |r| run.say("    #{r['case']}: #{r['outcome'].sub('refused: ', '')[0, 220]}") }
  end
end
