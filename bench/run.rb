# frozen_string_literal: true

# libkv's benchmarks: what each layer costs, against the floor, measured in one
# run so the ratios are fair on a noisy machine. `rake bench` builds what it needs
# and runs this; `ruby bench/run.rb --quick` runs fewer iterations.
#
# Layers 1 to 3 of a store run in ROUNDS alternating rounds (floor and core, then
# the Ruby API, again and again), and each layer's figures are of its samples of
# every round together: a slow minute of the machine or of a server lands on all
# three alike, not on one.
#
# For each store (mock, file, etcd, the Consul test double, ZooKeeper, SQLite) and
# each operation (get, put, exists, list100, atomic_get_put):
#   1. floor  the raw thing without libkv (Rust: a HashMap, temp file + fsync +
#             rename + dir fsync, a raw etcd-client loop, a raw HTTP loop, a raw
#             zookeeper-client loop whose reads are sync + read, rusqlite on one
#             connection in WAL mode with synchronous=FULL; ZooKeeper's floor adds
#             get_nosync, its get without the sync)
#   2. core   libkv's Rust Store trait, called directly          (target/release/libkv-bench)
#   3. ruby   LibKV.open(url).get(...) from plain Ruby           (this process)
#   4. puppet libkv::get(...) inside a real `puppet apply` catalog compilation
#      direct the Ruby API called from a function in that same compilation: what
#             the operation costs there without libkv's Puppet layer
#      noop   a no-op function with the same arguments (bench/modules), taking
#             them as repeated Any
#      bare   a no-op function declared as libkv's take their arguments
#             (String, Any, Optional[Hash]): the floor of a libkv:: call there;
#             each iteration times the four one after the other
#   floor-gap, core-gap
#             layers 1 and 2 again, with the no-op call's time of untimed busy
#             work before each operation, as a compilation has between two calls
# and then: the TCP connections a process making 10,000 calls to one etcd store
# opens (its connect() calls, seen by strace), and the RSS a puppet process gains
# by loading libkv and making its first call; then the watches (the time from a
# put to a watcher's event, libkv's watch against the store's own raw watch:
# `libkv-bench --watch`, per store); and last the bulk transfer (libkv cp and
# dump against raw etcd-client floors: `libkv-bench --transfer`, on an etcd of
# its own). `--watch-only` and `--transfer-only` run those alone.
#
# Nothing here asserts a time: it prints numbers, ratios and where the targets of
# BENCHMARKS.md stand.

require 'json'
require 'open3'
require 'tmpdir'
require 'fileutils'
require 'etc'

ROOT = File.expand_path('..', __dir__)
$LOAD_PATH.unshift(File.join(ROOT, 'lib'))
require 'libkv'
# The test suite's launchers of etcd, the Consul test double and ZooKeeper.
require_relative '../spec/support/etcd'
require_relative '../spec/support/consul'
require_relative '../spec/support/zookeeper'

QUICK = ARGV.include?('--quick')
TRANSFER_ONLY = ARGV.include?('--transfer-only')
WATCH_ONLY = ARGV.include?('--watch-only')
OPS = %w[get put exists list100 atomic_get_put].freeze
# The operations of the table: OPS, and the ZooKeeper floor's get without a sync.
TABLE_OPS = %w[get get_nosync put exists list100 atomic_get_put].freeze
VALUE = 'v' * 64
ITERATIONS = {
  'mock' => QUICK ? 5_000 : 100_000,
  'file' => QUICK ? 300 : 2_000,
  'etcd' => QUICK ? 500 : 3_000,
  'consul' => QUICK ? 500 : 3_000,
  'zookeeper' => QUICK ? 500 : 3_000,
  'sqlite' => QUICK ? 300 : 2_000,
}.freeze
ROUNDS = 3
# Operations per timed sample. A mock operation takes less time than reading the
# clock, so it is timed 100 at a time, each sample being the batch's mean.
BATCH = Hash.new(1).merge('mock' => 100).freeze
PUPPET_CALLS = QUICK ? 200 : 1_000
# Keys the transfer benchmark copies and dumps, and how many times; the medians
# are reported.
TRANSFER_KEYS = QUICK ? 10_000 : 100_000
TRANSFER_REPEAT = 3
# Puts per layer and store of the watch benchmark (Consul's: a fifth, paced past
# libkv's rate limit; see BENCHMARKS.md).
WATCH_PUTS = QUICK ? 50 : 200
TARGET = ENV['CARGO_TARGET_DIR'] || File.join(ROOT, 'target')

def monotonic
  Process.clock_gettime(Process::CLOCK_MONOTONIC)
end

# { n, ops_per_sec, p50_us, p99_us, mean_us } of latencies in µs, each the mean
# of a batch of +batch+ operations.
def stats(samples_us, batch = 1)
  sorted = samples_us.sort
  pick = ->(q) { sorted[[(q * sorted.size).ceil - 1, 0].max] }
  mean = samples_us.sum / samples_us.size
  { 'n' => samples_us.size * batch, 'ops_per_sec' => 1e6 / mean, 'p50_us' => pick.call(0.50),
    'p99_us' => pick.call(0.99), 'mean_us' => mean }
end

# Rows of the same store, layer and op (from several rounds) as one, of all their
# samples.
def pool(rows)
  rows.group_by { |r| r.values_at('store', 'layer', 'op') }.map do |(store, layer, op), group|
    batch = group.first.fetch('batch', 1)
    { 'store' => store, 'layer' => layer, 'op' => op }.merge(stats(group.flat_map { |r| r.fetch('samples_us') }, batch))
  end
end

# --- the stores -------------------------------------------------------------

def store_urls(scratch)
  FileUtils.mkdir_p(File.join(scratch, 'sqlite'))
  {
    'mock' => 'mock://bench',
    'file' => "file://#{scratch}/file-store",
    'etcd' => LibKVTest::Etcd.server(:plain).url('/bench'),
    'consul' => LibKVTest::Consul.server(:plain).url('/bench'),
    'sqlite' => "sqlite://#{scratch}/sqlite/bench.db",
  }
end

# --- layers 1 and 2: the Rust binary ------------------------------------------

# With +gap_us+, that many microseconds of busy work (allocations, memory
# traffic) run untimed before each operation, as Puppet's evaluation does between
# two function calls: the layers floor-gap and core-gap. Those time every
# operation on its own (a batch would have one gap for many operations).
def rust_layers(store, url, iterations, gap_us: 0)
  batch = gap_us.zero? ? BATCH[store] : 1
  bin = File.join(TARGET, 'release', 'libkv-bench')
  out, err, status = Open3.capture3(bin, '--store', store, '--url', url, '--gap-us', gap_us.to_s,
                                    '--iterations', iterations.to_s, '--batch', batch.to_s, '--samples')
  raise "libkv-bench failed for #{store}: #{err}" unless status.success?

  out.lines.map { |l| JSON.parse(l) }
end

# --- layer 3: the Ruby API --------------------------------------------------------

def ruby_layer(store_name, store, iterations)
  # The mock store lives in this object only, like the Rust layers' own data.
  store.put('/ruby/key', VALUE)
  100.times { |i| store.put("/ruby/list/k#{i}", VALUE) }
  store.put('/ruby/counter', VALUE)
  calls = {
    'get' => -> { store.get('/ruby/key') },
    'put' => -> { store.put('/ruby/key', VALUE) },
    'exists' => -> { store.exists('/ruby/key') },
    'list100' => -> { store.list('/ruby/list') },
    'atomic_get_put' => lambda {
      current = store.atomic_get('/ruby/counter')
      store.atomic_put('/ruby/counter', VALUE, current)
    },
  }
  batch = BATCH[store_name]
  calls.map do |op, call|
    [iterations / 10, 10].max.times { call.call }
    samples = Array.new(iterations / batch) do
      started = monotonic
      batch.times { call.call }
      (monotonic - started) * 1e6 / batch
    end
    { 'store' => store_name, 'layer' => 'ruby', 'op' => op, 'batch' => batch, 'samples_us' => samples }
  end
end

# --- layer 4: Puppet ---------------------------------------------------------------

# What one iteration of an operation calls in the compile: through libkv, through
# the Ruby API from a function (direct), a no-op function with the same arguments,
# and the bare no-op. (Each is one statement list; Puppet variables cannot be
# reassigned, hence $c1, $c3 and $c4.)
def calls(url)
  d = ->(op, key) { "libkv_bench::direct('#{op}', '#{url}', '#{key}')" }
  {
    'get' => ["libkv::get('/puppet/key', $o)", d.call('get', '/puppet/key'), "libkv_bench::noop('/puppet/key', $o)",
              "libkv_bench::bare('/puppet/key', $o)"],
    'put' => ["libkv::put('/puppet/key', '#{VALUE}', $o)", d.call('put', '/puppet/key'),
              "libkv_bench::noop('/puppet/key', '#{VALUE}', $o)", "libkv_bench::bare('/puppet/key', '#{VALUE}', $o)"],
    'exists' => ["libkv::exists('/puppet/key', $o)", d.call('exists', '/puppet/key'),
                 "libkv_bench::noop('/puppet/key', $o)", "libkv_bench::bare('/puppet/key', $o)"],
    'list100' => ["libkv::list('/puppet/list', $o)", d.call('list', '/puppet/list'),
                  "libkv_bench::noop('/puppet/list', $o)", "libkv_bench::bare('/puppet/list', $o)"],
    'atomic_get_put' => [
      "$c1 = libkv::atomic_get('/puppet/counter', $o) libkv::atomic_put('/puppet/counter', '#{VALUE}', $c1, $o)",
      "$c2 = #{d.call('atomic_get', '/puppet/counter')} " \
      "libkv_bench::direct('atomic_put', '#{url}', '/puppet/counter', $c2)",
      "$c3 = libkv_bench::noop('/puppet/counter', $o) libkv_bench::noop('/puppet/counter', '#{VALUE}', $c3, $o)",
      "$c4 = libkv_bench::bare('/puppet/counter', $o) libkv_bench::bare('/puppet/counter', '#{VALUE}', $o)",
    ],
  }
end

# A manifest timing PUPPET_CALLS iterations of each operation. Each iteration
# times the libkv call, the direct call and the two no-op ones one after the
# other, so the four see the store and the machine in the same moment. Every
# clock is read in a statement of its own: none of the four pays for another's
# arithmetic.
def manifest(url)
  timed = calls(url).map do |op, (real, direct, noop, bare)|
    <<~PP
      #{PUPPET_CALLS / 10}.each |$i| { #{real} #{direct} #{noop} #{bare} }
      $#{op} = #{PUPPET_CALLS}.map |$i| {
        $t1 = libkv_bench::clock()
        #{real}
        $t2 = libkv_bench::clock()
        #{direct}
        $t3 = libkv_bench::clock()
        #{noop}
        $t4 = libkv_bench::clock()
        #{bare}
        $t5 = libkv_bench::clock()
        [$t2 - $t1, $t3 - $t2, $t4 - $t3, $t5 - $t4]
      }
    PP
  end
  <<~PP
    $rss_before = libkv_bench::rss()
    $o = { 'url' => '#{url}' }
    libkv::put('/puppet/key', '#{VALUE}', $o)
    $rss_after = libkv_bench::rss()
    100.each |$i| { libkv::put("/puppet/list/k${i}", '#{VALUE}', $o) }
    libkv::put('/puppet/counter', '#{VALUE}', $o)
    # The direct calls' own data (a mock store they open is a store of their own).
    libkv_bench::direct('put', '#{url}', '/puppet/key')
    libkv_bench::direct('put', '#{url}', '/puppet/counter')
    100.each |$i| { libkv_bench::direct('put', '#{url}', "/puppet/list/k${i}") }
    #{timed.join}
    libkv_bench::report({
      'get' => $get, 'put' => $put, 'exists' => $exists, 'list100' => $list100,
      'atomic_get_put' => $atomic_get_put, 'rss_before' => $rss_before, 'rss_after' => $rss_after,
    })
  PP
end

def puppet_apply(scratch, name, code)
  modules = File.join(scratch, 'modules')
  unless File.directory?(modules)
    FileUtils.mkdir_p(modules)
    File.symlink(ROOT, File.join(modules, 'libkv'))
    File.symlink(File.join(ROOT, 'bench', 'modules', 'libkv_bench'), File.join(modules, 'libkv_bench'))
  end
  dir = File.join(scratch, "puppet-#{name}")
  FileUtils.mkdir_p(dir)
  File.write(File.join(dir, 'bench.pp'), code)
  out_file = File.join(dir, 'out.json')
  env = { 'RUBYLIB' => File.join(ROOT, 'lib'), 'LIBKV_BENCH_OUT' => out_file }
  _out, err, status = Open3.capture3(env, 'puppet', 'apply', '--modulepath', modules,
                                     '--vardir', File.join(dir, 'var'), '--confdir', File.join(dir, 'conf'),
                                     '--codedir', File.join(dir, 'code'), '--logdir', File.join(dir, 'log'),
                                     '--rundir', File.join(dir, 'run'), File.join(dir, 'bench.pp'))
  raise "puppet apply (#{name}) failed: #{err.lines.grep_v(/Facter/).join}" unless status.success?

  JSON.parse(File.read(out_file))
end

def puppet_layer(scratch, store_name, url)
  out = puppet_apply(scratch, store_name, manifest(url))
  rows = OPS.flat_map do |op|
    %w[puppet direct noop bare].each_with_index.map do |layer, i|
      { 'store' => store_name, 'layer' => layer, 'op' => op }.merge(stats(out.fetch(op).map { |t| t[i] * 1e6 }))
    end
  end
  [rows, out['rss_after'] - out['rss_before']]
end

# --- connections and memory ------------------------------------------------------------

# How many TCP connections a Ruby process opens to one etcd while it makes 10,000
# calls (puts and gets) through one store: every connect() it makes to the
# server's port, as strace sees them, from all of its threads.
def etcd_connections
  server = LibKVTest::Etcd.private_server(:plain)
  script = <<~RUBY
    store = LibKV.open(#{server.url('/connections').inspect})
    10_000.times { |i| i.even? ? store.put('/k', #{VALUE.inspect}) : store.get('/k') }
  RUBY
  Dir.mktmpdir('libkv-connections') do |dir|
    trace = File.join(dir, 'strace.log')
    cmd = ['strace', '-f', '-qq', '-e', 'trace=connect', '-e', 'signal=none', '-o', trace,
           RbConfig.ruby, '-I', File.join(ROOT, 'lib'), '-rlibkv', '-e', script]
    _out, err, status = Open3.capture3(*cmd)
    raise "the connection count failed (#{cmd.first(6).join(' ')} ...): #{err}" unless status.success?

    connects = File.readlines(trace).grep(/\bconnect\(.*sin_port=htons\(#{server.port}\)/)
    { 'calls' => 10_000, 'connects' => connects.size }
  end
end

# --- bulk transfer: libkv cp and dump against raw etcd ------------------------------

# What each measurement of `libkv-bench --transfer` is.
TRANSFER_LAYERS = {
  %w[copy raw-put] => 'floor 1: raw etcd-client, single puts, 8 tasks at once',
  %w[copy raw-txn] => 'floor 2: raw etcd-client, txns of 128 puts, 8 at once',
  %w[copy libkv] => 'libkv transfer::copy, file store -> etcd (default Options)',
  %w[source libkv-scan] => '  of which: reading the source (file store Store::scan)',
  %w[copy libkv-mem] => 'libkv transfer::copy from memory (mock://) -> etcd',
  %w[dump raw-range] => 'floor: raw etcd-client paged range read, 1,000 a page',
  %w[dump libkv] => 'libkv transfer::dump into io::sink',
  %w[dump libkv-scan] => '  of which: etcd Store::scan alone (no JSON)',
}.freeze
# The issue's targets, by ratio name: the most each ratio may be.
TRANSFER_TARGETS = { 'copy/raw-put' => 1.5, 'dump/raw-range' => 1.5 }.freeze

# `libkv-bench --transfer` on an etcd of its own (it deletes and compacts below its
# prefix), with a source file store in +scratch+ that it writes first: one write
# at a time, each fsynced (a minute or more for 100,000 keys; not measured). Its
# progress goes to stderr as it runs. Returns its JSON lines.
def transfer_bench(scratch)
  server = LibKVTest::Etcd.private_server(:plain)
  cmd = [File.join(TARGET, 'release', 'libkv-bench'), '--transfer', '--url', server.url('/bench-transfer'),
         '--source', "file://#{scratch}/transfer-source", '--keys', TRANSFER_KEYS.to_s,
         '--repeat', TRANSFER_REPEAT.to_s]
  out = IO.popen(cmd, &:read)
  raise "libkv-bench --transfer failed (#{$?}): see its messages above" unless $?.success?

  out.lines.map { |l| JSON.parse(l) }
ensure
  LibKVTest::Etcd.stop(server) if server
end

def print_transfer(rows, secs)
  setup = rows.find { |r| r['transfer'] == 'setup' }
  medians = rows.select { |r| r['transfer'] == 'median' }
  puts "transfer: libkv cp and dump against raw etcd, #{TRANSFER_KEYS} keys (/bench/k000001 = \"value-1\", ...), " \
       "median of #{TRANSFER_REPEAT} repetitions on fresh prefixes (#{secs.round} s in all)"
  puts "  source: a file store under #{Dir.tmpdir}, written once with libkv#{setup['built'] ? format(' (%.1f s, not measured)', setup['secs']) : ''}; " \
       'each copy on an emptied, compacted etcd'
  puts format('%-7s %-11s %-58s %9s %9s %9s %10s', 'op', 'layer', 'what', 'median s', 'min s', 'max s', 'keys/s')
  TRANSFER_LAYERS.each do |(op, layer), what|
    r = medians.find { |m| m['op'] == op && m['layer'] == layer } or next
    puts format('%-7s %-11s %-58s %9.3f %9.3f %9.3f %10.0f', op, layer, what, r['secs'], r['min_secs'],
                r['max_secs'], r['keys_per_sec'])
  end
  puts 'ratios (of the medians; each repetition\'s own in brackets):'
  rows.select { |r| r['transfer'] == 'ratio' }.each do |r|
    target = TRANSFER_TARGETS[r['name']]
    verdict = target ? format('target ≤ %.1f×: %s', target, r['value'] <= target ? 'met' : 'MISSED') : ''
    puts format('  %-72s %6.2f×  [%s]  %s', r['of'], r['value'], r['per_rep'].map { |v| format('%.2f', v) }.join(', '),
                verdict).rstrip
  end
end

def run_transfer(scratch)
  warn "benchmarking the transfer (#{TRANSFER_KEYS} keys) ..."
  started = monotonic
  rows = transfer_bench(scratch)
  print_transfer(rows, monotonic - started)
  File.write(File.join(ROOT, 'tmp', 'bench-transfer.json'), JSON.pretty_generate(rows)) if File.directory?(File.join(ROOT, 'tmp'))
end

# --- watches: from a put to the watcher's event ------------------------------------

# What each layer of `libkv-bench --watch` is, per store.
WATCH_LAYERS = {
  %w[mock libkv] => 'libkv watch (polls the store every 2 ms)',
  %w[file floor] => 'notify alone on the key\'s directory, libkv puts',
  %w[file libkv] => 'libkv watch (inotify via notify, 2 ms debounce, then a read)',
  %w[etcd floor] => 'etcd-client Watch stream, a client of its own',
  %w[etcd libkv] => 'libkv watch (an etcd Watch on the store\'s connection)',
  %w[consul floor] => 'raw reqwest blocking-query loop (?index=N&wait=5m)',
  %w[consul libkv] => 'libkv watch (blocking queries)',
  %w[consul libkv-burst] => 'libkv watch, puts back to back: its rate limit',
  %w[zookeeper floor] => 'zookeeper-client persistent watch, then getData',
  %w[zookeeper libkv] => 'libkv watch',
  %w[sqlite floor] => 'PRAGMA data_version polled every 1 ms, then a SELECT',
  %w[sqlite libkv] => 'libkv watch',
}.freeze

# `libkv-bench --watch` for one store: its JSON lines.
def watch_bench(store, url)
  bin = File.join(TARGET, 'release', 'libkv-bench')
  out, err, status = Open3.capture3(bin, '--watch', '--store', store, '--url', url, '--iterations', WATCH_PUTS.to_s)
  raise "libkv-bench --watch failed for #{store}: #{err}" unless status.success?

  out.lines.map { |l| JSON.parse(l) }
end

def print_watch(rows, secs)
  paced = rows.find { |r| r['cycle_ms'].positive? }
  burst = rows.find { |r| r['layer'] == 'libkv-burst' }
  pause = rows.first['pause_ms'].map { |ms| format('%g', ms) }.join('-')
  puts "watches: the time from a put to the event of a watcher of the key (#{secs.round(1)} s in all)"
  puts "  #{WATCH_PUTS} puts per layer, one at a time, each after a pause of #{pause} ms and waiting for its event; " \
       'floor and libkv take turns'
  if paced
    puts "  #{paced['store']}: #{paced['n']} per layer, each at least #{paced['cycle_ms'].round} ms after the layer's " \
         "last event (libkv's rate limit)#{burst ? ", then #{burst['n']} back to back (libkv-burst)" : ''}"
  end
  puts format('%-9s %-12s %-62s %5s %10s %10s %10s %10s %7s %10s', 'store', 'layer', 'what', 'n', 'median µs',
              'p90 µs', 'p99 µs', 'max µs', '×floor', 'put µs')
  rows.group_by { |r| r['store'] }.each do |store, group|
    floor = group.find { |r| r['layer'] == 'floor' }
    group.each do |r|
      ratio = floor && r['layer'] != 'floor' ? format('%.2f', r['p50_us'] / floor['p50_us']) : ''
      puts format('%-9s %-12s %-62s %5d %10.1f %10.1f %10.1f %10.1f %7s %10.1f', store, r['layer'],
                  WATCH_LAYERS.fetch([store, r['layer']], ''), r['n'], r['p50_us'], r['p90_us'], r['p99_us'],
                  r['max_us'], ratio, r['put_p50_us'])
    end
  end
  puts '(×floor: of the medians; put µs: the median of the put calls alone, until they returned)'
  conns = rows.select { |r| r['connections'] }.map { |r| "#{r['store']} #{r['connections']}" }
  puts "TCP connections libkv's watcher and putter held open to the server at the end: #{conns.join(', ')}" unless conns.empty?
end

def run_watch(urls)
  warn 'benchmarking the watches ...'
  started = monotonic
  rows = urls.flat_map { |store, url| watch_bench(store, url) }
  print_watch(rows, monotonic - started)
  File.write(File.join(ROOT, 'tmp', 'bench-watch.json'), JSON.pretty_generate(rows)) if File.directory?(File.join(ROOT, 'tmp'))
end

# --- the report --------------------------------------------------------------------

def machine
  cpu = File.read('/proc/cpuinfo')[/^model name\s*:\s*(.+)$/, 1]
  mem = File.read('/proc/meminfo')[/^MemTotal:\s+(\d+)/, 1].to_i / 1024 / 1024.0
  fs = `df -T #{Dir.tmpdir} | tail -1`.split[1]
  etcd = `etcd --version`[/etcd Version: (\S+)/, 1]
  {
    'cpu' => "#{cpu} (#{Etc.nprocessors} cores)", 'memory' => format('%.1f GiB', mem),
    'kernel' => `uname -r`.strip, 'filesystem' => "#{Dir.tmpdir} on #{fs}",
    'ruby' => RUBY_DESCRIPTION, 'puppet' => `puppet --version`.strip, 'etcd' => etcd,
    'zookeeper' => "#{zookeeper_version} (Debian's), client zookeeper-client #{locked('zookeeper-client')}",
    'sqlite' => "#{sqlite_version} (bundled by rusqlite #{locked('rusqlite')})",
    'rust' => `rustc --version`.strip, 'cpuidle' => cpuidle
  }
end

# The version of +crate+ in Cargo.lock.
def locked(crate)
  File.read(File.join(ROOT, 'Cargo.lock'))[/^name = "#{Regexp.escape(crate)}"\nversion = "([^"]+)"/, 1] || 'unknown'
end

# The installed ZooKeeper's version, from its jar's name (zookeeper-3.8.0.jar).
def zookeeper_version
  jars = Dir['/usr/share/java/zookeeper-[0-9]*.jar']
  jars.filter_map { |jar| File.basename(jar)[/\Azookeeper-([\d.]+)\.jar\z/, 1] }.first || 'not installed'
end

# The SQLite compiled into libkv-bench (and libkv-core: the same rusqlite, bundled).
def sqlite_version
  out, status = Open3.capture2(File.join(TARGET, 'release', 'libkv-bench'), '--versions')
  (status.success? && JSON.parse(out)['sqlite']) || 'unknown'
end

# How an idle CPU waits to be woken, which decides what a round trip between two
# processes costs when the other CPU has gone idle (see BENCHMARKS.md): the
# cpuidle driver and, in a KVM guest, how long haltpoll polls before halting.
def cpuidle
  read = ->(path) { File.read(path).strip rescue nil }
  driver = read.call('/sys/devices/system/cpu/cpuidle/current_driver') || 'unknown'
  poll = read.call('/sys/module/haltpoll/parameters/guest_halt_poll_ns')
  poll ? "#{driver}, guest_halt_poll_ns #{poll}" : driver
end

# A latency in µs, with three decimals below 10 µs (the mock store's are tens of
# nanoseconds).
def micros(us)
  format(us < 10 ? '%.3f' : '%.1f', us)
end

def print_table(rows)
  by = rows.group_by { |r| [r['store'], r['op']] }
  puts format('%-9s %-15s %-9s %12s %10s %10s %8s', 'store', 'op', 'layer', 'ops/s', 'p50 µs', 'p99 µs', '×floor')
  puts '(ops/s from the mean latency; ×floor and every comparison below use the p50, which tail spikes of a shared machine do not move;'
  puts ' the -gap layers are compared with floor-gap)'
  by.each do |(store, op), layer_rows|
    find = ->(layer) { layer_rows.find { |r| r['layer'] == layer } }
    floor = find.call('floor')
    gap_floor = find.call('floor-gap')
    layer_rows.each do |r|
      base = r['layer'].end_with?('-gap') ? gap_floor : floor
      ratio = base && !%w[noop bare direct].include?(r['layer']) ? format('%.2f', r['p50_us'] / base['p50_us']) : ''
      puts format('%-9s %-15s %-9s %12.0f %10s %10s %8s', store, op, r['layer'], r['ops_per_sec'],
                  micros(r['p50_us']), micros(r['p99_us']), ratio)
    end
    real = find.call('puppet')
    noop = find.call('noop')
    direct = find.call('direct')
    next unless real && noop && floor && direct && gap_floor

    beyond = real['p50_us'] - noop['p50_us']
    puts format('%-9s %-15s puppet: %.1f µs beyond the no-op (target: floor %s + 20 = %.1f; ' \
                'floor-gap %s + 20 = %.1f); %.1f µs beyond the bare no-op; %.1f µs beyond the direct Ruby API ' \
                'call in the same compile',
                store, op, beyond, micros(floor['p50_us']), floor['p50_us'] + 20, micros(gap_floor['p50_us']),
                gap_floor['p50_us'] + 20, beyond_bare(rows, store, op), beyond_direct(rows, store, op))
  end
end

def row(rows, store, layer, op)
  rows.find { |r| r['store'] == store && r['layer'] == layer && r['op'] == op }
end

# What libkv's Puppet layer adds to the Ruby API for +op+ in the compile. (For
# atomic_get_put both make two calls: libkv's atomic_get and atomic_put, and the
# direct function's.)
def beyond_direct(rows, store, op)
  row(rows, store, 'puppet', op)['p50_us'] - row(rows, store, 'direct', op)['p50_us']
end

# What a libkv:: call costs beyond the bare no-op declared as libkv's functions
# are, in the same compile.
def beyond_bare(rows, store, op)
  row(rows, store, 'puppet', op)['p50_us'] - row(rows, store, 'bare', op)['p50_us']
end

def targets(rows, rss, connections)
  ruby_etcd = row(rows, 'etcd', 'ruby', 'get')['p50_us'] / row(rows, 'etcd', 'floor', 'get')['p50_us']
  file_put = row(rows, 'file', 'ruby', 'put')['p50_us'] / row(rows, 'file', 'floor', 'put')['p50_us']
  worst = lambda do |floor_layer|
    rows.select { |r| r['layer'] == 'puppet' }.map { |r|
      noop = row(rows, r['store'], 'noop', r['op'])
      floor = row(rows, r['store'], floor_layer, r['op'])
      [r['p50_us'] - noop['p50_us'] - floor['p50_us'], "#{r['store']} #{r['op']}"]
    }.max
  end
  tight = worst.call('floor')
  gapped = worst.call('floor-gap')
  layer4 = rows.select { |r| r['layer'] == 'puppet' }.map { |r|
    [beyond_direct(rows, r['store'], r['op']), "#{r['store']} #{r['op']}"]
  }.max
  mock_bare = %w[get put].map { |op| [beyond_bare(rows, 'mock', op), op] }.max
  mock_direct = %w[get put].map { |op| [beyond_direct(rows, 'mock', op), op] }.max
  max_rss = rss.values.max / 1024.0
  connects = connections['connects']
  [
    ['Ruby API get on etcd ≤ 1.15× the floor', format('%.2f×', ruby_etcd), ruby_etcd <= 1.15],
    ['file-store put (Ruby API) ≤ 1.2× the fsync floor', format('%.2f×', file_put), file_put <= 1.2],
    ['Puppet cost ≤ no-op + floor + 20 µs (worst op)', format('+%.1f µs beyond no-op + floor (%s)', *tight), tight[0] <= 20],
    ['  the same, against floor-gap', format('+%.1f µs beyond no-op + floor-gap (%s)', *gapped), gapped[0] <= 20],
    ['libkv::op beyond the Ruby API in the same compile (worst)', format('+%.1f µs (%s)', *layer4), layer4[0] <= 20],
    ['mock get and put ≤ the bare no-op + 10 µs', format('+%.1f µs (worst: %s)', *mock_bare), mock_bare[0] <= 10],
    ['mock get and put ≤ the direct Ruby API call + 5 µs', format('+%.1f µs (worst: %s)', *mock_direct),
     mock_direct[0] <= 5],
    ['one connection per store (10,000 etcd calls)', "#{connects} connect() call#{connects == 1 ? '' : 's'}",
     connects == 1],
    ['≤ 15 MiB RSS gained by a puppet process', format('%.1f MiB (largest: %s)', max_rss, rss.max_by { |_, v| v }[0]), max_rss <= 15],
  ]
end

Dir.mktmpdir('libkv-bench') do |scratch|
  if TRANSFER_ONLY
    puts "libkv transfer benchmark, #{Time.now.utc.strftime('%Y-%m-%d %H:%M UTC')}#{QUICK ? ' (--quick)' : ''}"
    machine.each { |k, v| puts "  #{k}: #{v}" }
    puts
    run_transfer(scratch)
    next
  end
  if WATCH_ONLY
    puts "libkv watch benchmark, #{Time.now.utc.strftime('%Y-%m-%d %H:%M UTC')}#{QUICK ? ' (--quick)' : ''}"
    machine.each { |k, v| puts "  #{k}: #{v}" }
    puts
    run_watch(store_urls(scratch))
    next
  end
  urls = store_urls(scratch)
  rows = []
  rss = {}
  urls.each do |store, url|
    warn "benchmarking #{store} ..."
    per_round = ITERATIONS.fetch(store) / ROUNDS
    api = LibKV.open(url)
    rounds = Array.new(ROUNDS) { rust_layers(store, url, per_round) + ruby_layer(store, api, per_round) }
    rows.concat(pool(rounds.flatten))
    puppet_rows, rss[store] = puppet_layer(scratch, store, url)
    rows.concat(puppet_rows)
    # The floor and the core again, with the no-op call's time of work between calls.
    gap = puppet_rows.find { |r| r['layer'] == 'noop' && r['op'] == 'get' }['p50_us'].round
    rows.concat(pool(rust_layers(store, url, ITERATIONS.fetch(store), gap_us: gap)))
  end
  connections = etcd_connections
  order = %w[floor core floor-gap core-gap ruby puppet direct noop bare]
  rows.sort_by! { |r| [urls.keys.index(r['store']), TABLE_OPS.index(r['op']), order.index(r['layer'])] }

  puts "libkv benchmarks, #{Time.now.utc.strftime('%Y-%m-%d %H:%M UTC')}#{QUICK ? ' (--quick)' : ''}"
  machine.each { |k, v| puts "  #{k}: #{v}" }
  puts "  iterations: #{ITERATIONS.map { |s, n| "#{s} #{n}" }.join(', ')} per layer and op (floor, core and ruby " \
       "in #{ROUNDS} alternating rounds; mock timed #{BATCH['mock']} operations at a time); " \
       "puppet: #{PUPPET_CALLS} calls per op"
  puts
  print_table(rows)
  puts
  puts "etcd connections opened by a process making 10,000 calls: #{connections['connects']} (connect() calls, by strace)"
  puts "RSS a puppet process gains by loading libkv (KiB): #{rss.map { |s, v| "#{s} #{v}" }.join(', ')}"
  puts
  puts 'targets:'
  targets(rows, rss, connections).each { |name, value, met| puts format('  %-50s %-45s %s', name, value, met ? 'met' : 'MISSED') }
  File.write(File.join(ROOT, 'tmp', 'bench.json'), JSON.pretty_generate(rows)) if File.directory?(File.join(ROOT, 'tmp'))
  puts
  run_watch(urls)
  puts
  run_transfer(scratch)
end
