# frozen_string_literal: true

# A worker process of the stress runs: `ruby stress/worker.rb COMMAND` with its
# input as one line of JSON on stdin; it prints its result as one JSON line (the
# interactive ones answer each further line of stdin with one). Each is a plain
# Ruby process that loads libkv itself, as a Puppet run would: MRI with the
# extension, or JRuby with the C ABI library, as puppetserver runs it. Ruby 2.6
# compatible, as JRuby 9.3 is.

require 'json'
require 'fileutils'
$LOAD_PATH.unshift(File.expand_path('../lib', __dir__))
require 'libkv'
require_relative 'crash_value'
require_relative 'operations'
require_relative 'processes'

input = JSON.parse($stdin.gets.to_s)

def monotonic
  Stress.monotonic
end

def open_store(input)
  LibKV.open(input['url'], input['auth'] || {}, timeout: input['timeout'] || 5.0)
end

# Sleeps until the wall-clock time every worker of a race starts at.
def wait_for_start(input)
  wait = input['start_at'].to_f - Time.now.to_f
  sleep(wait) if wait.positive?
end

# Whether +a+ and +b+ are the same value, Strings with the same encoding too.
def same?(a, b)
  case a
  when String then b.is_a?(String) && a.encoding == b.encoding && a.b == b.b
  when Array then b.is_a?(Array) && a.size == b.size && a.each_index.all? { |i| same?(a[i], b[i]) }
  when Hash then b.is_a?(Hash) && a.size == b.size && a.keys.zip(b.keys).all? { |x, y| same?(x, y) } &&
                 a.all? { |k, v| same?(v, b[k]) }
  when Float then b.is_a?(Float) && [a].pack('G') == [b].pack('G')
  else a.class == b.class && a == b
  end
end

def nested(depth, kind)
  (1...depth).reduce(kind == :array ? ['leaf'] : { 'k' => 'leaf' }) { |v, _| kind == :array ? [v] : { 'k' => v } }
end

# Hostile values put and read back (get and atomic_get) on one store. Each case
# says what it expects back (nil: exactly what was put) and whether the store may
# refuse it instead: then the put itself must raise, with an error that names the
# key. Once a put has returned, any error reading the value back is a failure.
def hostile_values(input)
  store = open_store(input)
  random = Random.new(input['seed'])
  mib = 1 << 20
  own = [1, 2]
  own << own
  cases = [
    ['empty String', ''],
    ['empty binary String', ''.b],
    ['10 MiB String', 'x' * (10 * mib), nil, true],
    ['10 MiB of random bytes', random.bytes(10 * mib), nil, true],
    ['10 MiB of random bytes, serialize false', random.bytes(10 * mib), nil, true, false],
    ['Arrays nested 1,000 levels deep', nested(1000, :array), nil, true],
    ['Hashes nested 1,000 levels deep', nested(1000, :hash), nil, true],
    ['Arrays nested 100 levels deep (the limit)', nested(100, :array)],
    ['an Array that contains itself', own, nil, true],
    ['bytes that are not UTF-8', "\xff\xfe\x00\x80\xc3".b],
    ['a UTF-8 String with invalid bytes', (+"ok \xff").force_encoding('UTF-8'), nil, true],
    ['NUL bytes in a String', "a\0b\0\0c"],
    ['NUL bytes, serialize false', "\0\0\0", nil, false, false],
    ['a String that looks like an envelope', '{"libkv":1,"value":5}'],
    ['a binary String that looks like an envelope', '{"libkv":1,"value":"x"}'.b],
    ['four-byte UTF-8 and combining marks', "\u{1F600} e\u0301 \u{10FFFF}"],
    ['a UTF-16LE String (read back as UTF-8)', 'h\u00e9llo'.encode('UTF-16LE'), 'h\u00e9llo'],
    ['a Symbol (read back as its name)', :sym, 'sym'],
    ['a Hash of 100,000 entries', Hash[Array.new(100_000) { |i| ["key#{i}", i] }], nil, true],
    ['an Array of 200,000 Integers', Array.new(200_000) { |i| i * 7919 }, nil, true],
    ['Hash keys that are not Strings', { 1 => 'one', nil => 'nil', [1, 2] => { true => 2.5 }, '__ptype' => 'x' }],
    ['Integer and Float limits', [2**63 - 1, -2**63, 0.1, -0.0, 1e308, 5e-324, -1.5e-300]],
    ['an Integer beyond 64 bits', 2**64, nil, true],
    ['NaN', Float::NAN, nil, true],
    ['an object libkv does not store', Object.new, nil, true],
  ]
  outcomes = cases.map.with_index do |(name, value, expected, may_refuse, serialize), i|
    serialize = true if serialize.nil?
    key = "/values/#{i}"
    expected = value if expected.nil?
    { 'case' => name, 'key' => key, 'outcome' => value_outcome(store, key, value, expected, may_refuse, serialize) }
  end
  outcomes << big_listing(store, random)
end

# What became of one hostile value: 'exact', 'refused: ERROR' (the put raised and
# the case allows it), or what went wrong.
def value_outcome(store, key, value, expected, may_refuse, serialize)
  begin
    store.put(key, value, serialize: serialize)
  rescue LibKV::Error, TypeError => e
    return "#{may_refuse ? 'refused' : 'refused, but it should be stored'}: #{e.class}: #{e.message}"
  end
  begin
    back = store.get(key, serialize: serialize)
    atomic = store.atomic_get(key, serialize: serialize)
  rescue StandardError => e
    return "the put returned, but reading the value back raised #{e.class}: #{e.message}"
  end
  return "get read back differently: #{back.inspect[0, 120]}" unless same?(expected, back)
  return "atomic_get read back differently: #{atomic.inspect[0, 120]}" unless same?(expected, atomic['value'])
  return "atomic_get gave no sequence: #{atomic['sequence'].inspect}" unless atomic['sequence'].is_a?(Integer) &&
                                                                             atomic['sequence'].positive?

  'exact'
end

# A listing larger than any one value: 12 values of 400 KB (below every store's
# limit for one value), read back together by list and atomic_list.
def big_listing(store, random)
  what = 'a listing of 12 values of 400 KB'
  big = Array.new(12) { |i| random.bytes(200_000).unpack1('H*')[0, 400_000 - i].encode(Encoding::UTF_8) }
  big.each_with_index { |v, i| store.put("/values/big/#{i}", v) }
  listed = store.list('/values/big')
  atomic = store.atomic_list('/values/big')
  same = listed.size == 12 && atomic.size == 12 &&
         big.each_with_index.all? { |v, i| same?(v, listed[i.to_s]) && same?(v, atomic[i.to_s]['value']) }
  { 'case' => what, 'key' => '/values/big', 'outcome' => same ? 'exact' : 'read back differently' }
rescue LibKV::Error => e
  { 'case' => what, 'key' => '/values/big', 'outcome' => "failed, but it should be stored: #{e.class}: #{e.message}" }
end

# 16 threads sharing one store object, each mixing every operation, for at most
# input['deadline'] seconds. Returns each thread's count of calls and the result
# of each of its atomic_create calls of the contested keys /create/I, every
# failure seen, the counter, the value each contested key holds, and what is left
# below /own.
def thread_mix(input)
  store = open_store(input)
  threads = input['threads']
  iterations = input['iterations']
  failures = Queue.new
  creates = Array.new(threads) { Array.new(iterations) }
  calls = Array.new(threads, 0)
  started = monotonic
  workers = Array.new(threads) do |t|
    Thread.new do
      n = 0
      iterations.times do |i|
        key = "/own/#{t}/#{i}"
        value = { 'thread' => t, 'i' => i, 'bytes' => "#{t}-#{i}".b }
        store.put(key, value)
        failures << "#{key} read back #{store.get(key).inspect}" unless store.get(key) == value
        failures << "#{key} does not exist" unless store.exists(key)
        loop do
          n += 2
          current = store.atomic_get('/counter')
          break if store.atomic_put('/counter', current['value'].to_i + 1, current)
        end
        creates[t][i] = store.atomic_create("/create/#{i}", t)
        n += 1
        own = store.list("/own/#{t}")
        failures << "/own/#{t} lists #{own.size} keys, not #{i + 1}" unless own.size == i + 1
        store.atomic_delete("/gone/#{t}", store.atomic_get("/gone/#{t}"))
        n += 7
      end
      store.deletetree("/own/#{t}")
      calls[t] = n + 1
    rescue StandardError => e
      failures << "thread #{t}: #{e.class}: #{e.message}"
    end
  end
  deadline = monotonic + input['deadline']
  hung = workers.count { |w| w.join([deadline - monotonic, 0].max).nil? }
  seconds = monotonic - started
  failed = Array.new(failures.size) { failures.pop }
  result = { 'hung' => hung, 'failures' => failed, 'calls' => calls, 'creates' => creates, 'seconds' => seconds,
             'engine' => RUBY_ENGINE }
  return result if hung.positive?

  result.merge('counter' => store.get('/counter'),
               'stored' => Array.new(iterations) { |i| store.get("/create/#{i}") },
               'left' => store.list('/own').size)
end

# A store opened and in use, then forked while a thread of this process keeps
# calling it: the children use the inherited store object while this process
# goes on using it too. Returns what the children and the calling thread did.
def fork_mix(input)
  store = open_store(input)
  rounds = input['rounds']
  children = input['children']
  increments = input['increments']
  deadline = input['deadline']
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
    Stress.wait_all(pids, deadline).each do |pid, status|
      next if status&.success?

      failed << "child #{pid} of round #{round + 1} " \
                "#{status ? "exited #{status.exitstatus.inspect}" : "still ran after #{deadline} s (deadlock?)"}"
    end
  end
  stop = true
  stopped = !hammer.join(30).nil?
  result = { 'forked' => forked, 'failed' => failed, 'parent_calls' => parent_calls,
             'parent_errors' => parent_errors, 'stopped' => stopped }
  stopped ? result.merge('counter' => store.get('/counter')) : result
end

# The outage run's Ruby API calls, one request at a time (see Stress::Session):
# the store is opened and '/before' put first; then each request line is
# {"op": "calls"} (every operation, one answer line each, then {"done": true})
# or {"op": "recovered", "state": S} (put '/after' S, then get '/after' and
# '/before').
def outage_api(input)
  store = open_store(input)
  store.put('/before', 'kept')
  answer('ready' => true)
  while (line = $stdin.gets)
    request = JSON.parse(line)
    case request['op']
    when 'calls'
      Stress.every_operation.each do |op, call|
        started = monotonic
        outcome =
          begin
            { 'returned' => call.call(store).inspect }
          rescue StandardError => e
            { 'class' => e.class.name, 'message' => e.message, 'connection' => e.is_a?(LibKV::ConnectionError) }
          end
        answer(outcome.merge('op' => op, 'seconds' => monotonic - started))
      end
      answer('done' => true)
    when 'recovered'
      outcome =
        begin
          store.put('/after', request['state'])
          { 'values' => [store.get('/after'), store.get('/before')] }
        rescue StandardError => e
          { 'class' => e.class.name, 'message' => e.message }
        end
      answer(outcome)
    end
  end
  nil
end

def answer(message)
  $stdout.puts(JSON.generate(message))
  $stdout.flush
end

# Every path a secret could leak by, for each setup of +input['setups']+ ({ url,
# auth }): LibKV.open, inspect, url, info, every operation and its error (message,
# inspect, full_message); then the same setups as options of libkv:: functions in
# Puppet, with debug on, with and without softfail, positional and as one Hash of
# named parameters, with auth as plain Strings and as Sensitive; the same calls
# with invalid options beside the secrets; and calls that take their auth (and
# url) from Hiera libkv::auth (input['hiera']). Returns all the text seen.
def secret_paths(input)
  texts = []
  input['setups'].each do |setup|
    begin
      store = LibKV.open(setup['url'], setup['auth'], timeout: 2.0)
      texts << store.inspect << store.to_s << store.url << store.provider
      Stress.every_operation.each do |op, call|
        texts << "#{op}: #{call.call(store).inspect}"
      rescue LibKV::Error => e
        texts << e.message << e.inspect << e.full_message(highlight: false)
      end
    rescue LibKV::Error, TypeError => e
      texts << e.message << e.inspect << e.full_message(highlight: false)
    end
  end
  puppet = %w[plain sensitive].map do |form|
    puppet_calls('dir' => File.join(input['dir'], form), 'calls' => secret_calls(input['setups']),
                 'sensitive_auth' => form == 'sensitive')
  end
  hiera = input['hiera']
  hiera_calls = [nil, *input['setups'].map { |setup| setup['url'] }].flat_map do |url|
    [false, true].flat_map do |softfail|
      options = { 'debug' => true, 'softfail' => softfail, 'timeout' => 2 }
      options['url'] = url if url
      [['put', '/k', 'v', options], ['get', '/k', options], ['pop_error'],
       ['get', options.merge('key' => '/k')], ['info', options], ['pop_error'],
       ['get', '/k', options.merge('timeout' => 'soon')], ['put', options.merge('key' => '/k', 'timeout' => 0)]]
    end
  end
  puppet << puppet_calls('dir' => File.join(input['dir'], 'hiera'), 'calls' => hiera_calls, 'hiera' => hiera)
  { 'engine' => RUBY_ENGINE, 'texts' => texts, 'puppet' => puppet }
end

# The Puppet calls of secret_paths for +setups+: each function with softfail off
# and on, positional and named; pop_error after each softfail; and calls whose
# options are invalid (besides the auth, which holds the secrets).
def secret_calls(setups)
  functions = [['put', '/k', 'v'], ['get', '/k'], ['list', '/'], ['atomic_get', '/k'], ['info'], ['provider'],
               ['pop_error']]
  setups.flat_map do |setup|
    calls = [false, true].flat_map do |softfail|
      options = { 'url' => setup['url'], 'auth' => setup['auth'], 'debug' => true, 'softfail' => softfail, 'timeout' => 2 }
      functions.map { |f, *args| f == 'pop_error' ? [f] : [f, *args, options] } +
        [['put', options.merge('key' => '/k', 'value' => 'v')], ['get', options.merge('key' => '/k')],
         ['atomic_get', options.merge('key' => '/k')], ['pop_error']]
    end
    options = { 'url' => setup['url'], 'auth' => setup['auth'], 'debug' => true, 'softfail' => true }
    invalid = [{ 'timeout' => 0 }, { 'timeout' => 'soon' }, { 'timeout' => 99_999 }, { 'softfail' => 'yes' },
               { 'serialize' => 'no' }, { 'retries' => 3 }, { 'url' => '' }, { 'url' => 'nosuch://x' }]
    calls + invalid.flat_map do |bad|
      [['get', '/k', options.merge(bad)], ['put', options.merge(bad).merge('key' => '/k', 'value' => 'v')],
       ['get', '/not a key', options.merge(bad)]]
    end + [['get', '/k', options.merge('auth' => setup['auth'].merge('' => 'x'))],
           ['get', '/k', options.merge('auth' => setup['auth'].merge('password' => 5))],
           ['get', '/k', options.merge('auth' => setup['auth'].to_a.flatten.join('='))]]
  end
end

# Runs the block for each store of input['stores'] ({ name, url, auth, ... }),
# given the rest of +input+ too, and returns { name => its result }. A store
# whose part raised gets { 'error' => ... } and the next one runs all the same;
# after threads that hung (a result with 'hung'), none does.
def each_store(input)
  results = {}
  input['stores'].each do |store|
    begin
      results[store['name']] = yield(input.merge(store))
    rescue StandardError => e
      results[store['name']] = { 'error' => "#{e.class}: #{e.message}" }
    end
    break if results[store['name']].is_a?(Hash) && results[store['name']]['hung'].to_i.positive?
  end
  { 'engine' => RUBY_ENGINE, 'stores' => results }
end

# A Puppet value as JSON can carry it.
def plain(value)
  case value
  when Hash then value.each_with_object({}) { |(k, v), h| h[plain(k).to_s] = plain(v) }
  when Array then value.map { |v| plain(v) }
  when String, Integer, Float, true, false, nil then value
  else value.to_s
  end
end

# libkv:: functions called in one real Puppet compilation (Puppet's PAL script
# compiler, with this checkout as the module libkv), every log message of Puppet
# kept at debug level. Input: { dir:, calls: [[function, args...]],
# sensitive_auth: true to pass auth values as Sensitive, hiera: the Hiera data
# (e.g. libkv::auth) }. Returns, per call, its result or error and its time, and
# the log messages.
def puppet_calls(input)
  require 'puppet'
  require 'puppet_pal'
  dir = input['dir']
  modules = File.join(dir, 'modules')
  FileUtils.mkdir_p(modules)
  link = File.join(modules, 'libkv')
  File.symlink(File.expand_path('..', __dir__), link) unless File.symlink?(link)
  hiera = File.join(dir, 'hiera.yaml')
  if input['hiera']
    FileUtils.mkdir_p(File.join(dir, 'data'))
    File.write(File.join(dir, 'data', 'common.json'), JSON.generate(input['hiera']))
    File.write(hiera, "---\nversion: 5\ndefaults:\n  datadir: #{File.join(dir, 'data')}\n  data_hash: json_data\n" \
                      "hierarchy:\n  - name: common\n    path: common.json\n")
  else
    File.write(hiera, "---\nversion: 5\nhierarchy: []\n")
  end
  unless Puppet.settings.global_defaults_initialized?
    Puppet.initialize_settings(['--vardir', File.join(dir, 'var'), '--confdir', File.join(dir, 'conf'),
                                '--codedir', File.join(dir, 'code'), '--hiera_config', hiera])
  end
  # Each call has its own Hiera data: the setting outlives the first call.
  Puppet[:hiera_config] = hiera
  logs = []
  Puppet::Util::Log.close_all
  Puppet::Util::Log.newdestination(Puppet::Test::LogCollector.new(logs))
  Puppet::Util::Log.level = :debug
  results = []
  Puppet::Pal.in_tmp_environment('stress', modulepath: [modules], facts: {}) do |pal|
    pal.with_script_compiler do |compiler|
      input['calls'].each do |function, *args|
        args = args.map { |a| sensitive_auth(a) } if input['sensitive_auth']
        started = monotonic
        begin
          value = compiler.call_function("libkv::#{function}", *args)
          results << { 'function' => function, 'result' => plain(value), 'seconds' => monotonic - started }
        rescue StandardError => e
          results << { 'function' => function, 'error' => "#{e.class}: #{e.message}", 'seconds' => monotonic - started }
        end
      end
    end
  end
  { 'results' => results, 'logs' => logs.map { |l| "#{l.level}: #{l.message}" } }
end

def sensitive_auth(arg)
  return arg unless arg.is_a?(Hash) && arg['auth'].is_a?(Hash)

  sensitive = arg['auth'].transform_values { |v| Puppet::Pops::Types::PSensitiveType::Sensitive.new(v) }
  arg.merge('auth' => sensitive)
end

result =
  case ARGV.first
  when 'lock-sections'
    # Sections under one lock until the file input['stop'] exists: a plain get
    # and put of a counter (no compare-and-swap), each logged once done with its
    # interval (monotonic, the same clock in every process) and fence.
    store = open_store(input)
    log = File.open(input['log'], File::WRONLY | File::APPEND | File::CREAT)
    random = Random.new(input['seed'])
    sections = 0
    until File.exist?(input['stop'])
      store.lock(input['key'], ttl: input['ttl'], timeout: 120) do |lock|
        started = monotonic
        count = store.get(input['counter']).to_i
        sleep(random.rand * 0.003)
        store.put(input['counter'], count + 1)
        log.syswrite("#{started} #{monotonic} #{lock.fence}\n")
      end
      sections += 1
    end
    { 'sections' => sections }
  when 'ttl-writer'
    # Keys written with a ttl again and again, some lapsing between writes, each
    # put logged once it returned:
    # key, generation, and the wall-clock time (ms) by which its ttl ends at the latest.
    store = open_store(input)
    log = File.open(input['log'], File::WRONLY | File::APPEND | File::CREAT)
    gen = 0
    until File.exist?(input['stop'])
      gen += 1
      input['keys'].times do |i|
        # Each key written every input['every'] rounds only: written again, or lapsing.
        next unless ((gen + i) % input['every']).zero?

        key = "#{input['dir']}/k#{i}"
        store.put(key, "#{i} #{gen}", ttl: input['ttl'])
        log.syswrite("#{key} #{gen} #{(Time.now.to_f * 1000).ceil + input['ttl'] * 1000}\n")
      end
      sleep(input['pause'])
    end
    { 'generations' => gen }
  when 'counter'
    # atomic_get/atomic_put increments of one key, retrying on a conflict.
    store = open_store(input)
    wait_for_start(input)
    attempts = 0
    errors = []
    input['increments'].times do
      loop do
        attempts += 1
        begin
          current = store.atomic_get(input['key'])
          break if store.atomic_put(input['key'], current['value'].to_i + 1, current)
        rescue LibKV::Error => e
          # The outcome of a failed atomic_put is unknown: report it, never retry it.
          errors << "#{e.class}: #{e.message}"
          break
        end
      end
    end
    { 'attempts' => attempts, 'errors' => errors }
  when 'create'
    # atomic_create of each key in turn; which ones this worker created.
    store = open_store(input)
    wait_for_start(input)
    won = input['keys'].select { |key| store.atomic_create(key, input['id']) }
    { 'won' => won }
  when 'crash-writer'
    # Puts key after key, generation after generation, appending "i gen" to the
    # ack file after each put has returned, until killed (or past last_gen, or
    # after max_puts puts). The file input['ready'] tells the store is open and
    # the first put is next.
    store = open_store(input)
    ack = File.open(input['ack'], File::WRONLY | File::APPEND | File::CREAT)
    File.write(input['ready'], '') if input['ready']
    i = input['start_key']
    gen = input['start_gen']
    puts_left = input['max_puts']
    loop do
      store.put(Stress::CrashValue.key(i), Stress::CrashValue.make(i, gen))
      ack.syswrite("#{i} #{gen}\n")
      break if puts_left && (puts_left -= 1).zero?

      i += 1
      next if i < input['keys']

      i = 0
      gen += 1
      break if gen > input['last_gen']
    end
    { 'done' => true }
  when 'threads'
    each_store(input) { |one| thread_mix(one) }
  when 'fork'
    fork_mix(input)
  when 'outage-api'
    outage_api(input)
  when 'puppet'
    puppet_calls(input)
  when 'values'
    each_store(input) { |one| hostile_values(one) }
  when 'secrets'
    secret_paths(input)
  else
    abort "unknown worker command #{ARGV.first.inspect}"
  end
puts JSON.generate(result) if result
$stdout.flush
# Threads that hung in a call must not keep the process from ending.
exit!(0) if result.is_a?(Hash) && result.fetch('stores', {}).values.any? { |r| r.is_a?(Hash) && r['hung'].to_i.positive? }
