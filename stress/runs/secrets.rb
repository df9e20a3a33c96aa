# frozen_string_literal: true

require 'securerandom'

# The error and debug paths run with a password, a token and key files whose
# contents are known, under MRI (the extension) and JRuby (the C ABI library, as
# puppetserver runs it): every line a process printed, every exception message,
# inspect, info() and Puppet log line (debug level) is captured, including calls
# in the named-parameter form, calls with invalid options beside the secrets, and
# calls whose auth comes from Hiera libkv::auth; softfail warnings and pop_error
# messages must appear. The occurrences of each secret are counted: 0.
Stress.define('secrets', 'passwords, tokens and key file contents never appear in errors, logs, info or debug output') do |run, random|
  etcd = LibKVTest::Etcd
  consul = LibKVTest::Consul
  certs = LibKVTest::Certs.files
  dir = Stress.tmpdir('secrets')
  salt = random.rand(1 << 40).to_s(36)
  wrong_password = "wrong-pw-#{salt}"
  wrong_token = "wrong-token-#{salt}"
  url_secret = "url-pw-#{salt}"
  bogus_key = File.join(dir, 'bogus.key')
  File.write(bogus_key, "libkv-stress-key-material-#{salt}\n")
  key_pem = File.read(certs[:client_key])
  # Each line of the key's body is a secret of its own: a part of it is a leak too.
  secrets = {
    'etcd password' => etcd::PASSWORD, 'wrong password' => wrong_password,
    'Consul token' => consul::TOKEN, 'wrong token' => wrong_token, 'password in a URL' => url_secret,
    'bogus key file' => File.read(bogus_key).strip
  }
  key_pem.lines.map(&:strip).reject { |l| l.start_with?('-----') || l.size < 16 }.each_with_index do |line, i|
    secrets["client key line #{i + 1}"] = line
  end

  auth_etcd = etcd.server(:auth)
  mtls = etcd.server(:mtls)
  token = consul.server(:token)
  consul_mtls = consul.server(:mtls)
  right = { 'username' => 'root', 'password' => etcd::PASSWORD }
  setups = [
    ['etcd, the right password', auth_etcd.url('/s'), right],
    ['etcd, a wrong password', auth_etcd.url('/s'), right.merge('password' => wrong_password)],
    ['etcd, an unknown user', auth_etcd.url('/s'), right.merge('username' => 'nobody')],
    ['etcd, a password but no username', auth_etcd.url('/s'), { 'password' => etcd::PASSWORD }],
    ['etcd, client certificate', mtls.url('/s'), etcd.auth_for(:mtls)],
    ['etcd, a key file that is not a key', mtls.url('/s'), etcd.auth_for(:mtls).merge('key_file' => bogus_key)],
    ['etcd, the key file as the certificate', mtls.url('/s'), etcd.auth_for(:mtls).merge('cert_file' => certs[:client_key])],
    ['etcd, the key file as the CA', mtls.url('/s'), etcd.auth_for(:mtls).merge('ca_file' => certs[:client_key])],
    ['etcd, TLS files on a plain URL', auth_etcd.url('/s'), right.merge('key_file' => certs[:client_key])],
    ['etcd, a password in the URL', "etcd://root:#{url_secret}@127.0.0.1:#{auth_etcd.port}/s", {}],
    ['etcd, a password in the query', "etcd://127.0.0.1:#{auth_etcd.port}/s?password=#{url_secret}", {}],
    ['Consul, the right token', token.url('/s'), { 'token' => consul::TOKEN }],
    ['Consul, a wrong token', token.url('/s'), { 'token' => wrong_token }],
    ['Consul, a key file that is not a key', consul_mtls.url('/s'), consul.auth_for(:mtls).merge('key_file' => bogus_key)],
    ['Consul, the key file as the CA', consul_mtls.url('/s'), consul.auth_for(:mtls).merge('ca_file' => certs[:client_key])],
    ['Consul, a token in the URL', "consul://#{url_secret}@127.0.0.1:#{token.port}/s", {}],
    ['SQLite store, given a password', "sqlite://#{dir}/store.db", { 'password' => etcd::PASSWORD }],
    ['file store, given a password', "file://#{dir}/store", { 'password' => etcd::PASSWORD }],
    ['an auth setting libkv does not know', "file://#{dir}/store", { 'passwd' => wrong_password }],
    ['mock store, given a token', 'mock://', { 'token' => consul::TOKEN }],
  ]
  hiera = { 'libkv::url' => auth_etcd.url('/s'), 'libkv::auth' => right }
  input = { setups: setups.map { |_, url, auth| { url: url, auth: auth } }, hiera: hiera }
  engines = [:mri]
  missing = Stress.jruby_missing
  missing ? run.fail!("JRuby cannot run the secrets paths: #{missing}") : engines << :jruby
  captured = +''
  # The two Rubies at once.
  started = engines.map do |engine|
    stderr = File.join(dir, "stderr-#{engine}")
    [engine, stderr,
     *Stress.spawn_worker('secrets', input.merge(dir: File.join(dir, engine.to_s)), err: stderr, engine: engine)]
  end
  started.each do |engine, stderr, pid, out|
    who = engine == :mri ? 'MRI' : 'JRuby'
    status = Stress.wait_all([pid], 400)[pid]
    printed = out.value
    result = Stress.result_of(out) || {}
    run.check(status&.success? && result.key?('texts'),
              "#{who}: the process running the paths failed: #{status.inspect}; #{Stress.tail_of(stderr)}")
    captured << printed << File.read(stderr)
    texts = Array(result['texts'])
    puppet = Array(result['puppet'])
    logs = puppet.flat_map { |p| p['logs'] }
    calls = puppet.flat_map { |p| p['results'] }
    errors = calls.count { |c| c['error'] }
    levels = logs.group_by { |l| l[/\A\w+/] }.transform_values(&:size)
    libkv_debug = logs.count { |l| l.start_with?('debug: libkv::') }
    softfail = logs.count { |l| l.start_with?('warning: libkv::') && l.include?('(softfail: returning ') }
    popped = calls.count { |c| c['function'] == 'pop_error' && c['result'].is_a?(String) && c['result'].start_with?('libkv::') }
    invalid = calls.count { |c| c['error'].to_s.start_with?('ArgumentError') || c['error'].to_s.include?('expects') }
    run.say("#{who} (#{result['engine']}): #{setups.size} setups; #{texts.size} texts from the Ruby API, " \
            "#{calls.size} Puppet calls (#{errors} raised, #{invalid} of them for invalid input), #{logs.size} Puppet " \
            "log lines #{levels.inspect} (#{libkv_debug} libkv debug lines, #{softfail} softfail warnings), " \
            "#{popped} pop_error messages; #{(printed.bytesize + File.size(stderr))} bytes captured")
    # Each path must really have run, or counting 0 secrets in its output proves nothing.
    run.check(libkv_debug.positive?, "#{who}: no libkv debug line was logged: the debug path did not run")
    run.check(softfail.positive?, "#{who}: no softfail warning was logged: the softfail path did not run")
    run.check(popped.positive?, "#{who}: pop_error never returned a message: the pop_error path did not run")
    run.check(invalid >= setups.size, "#{who}: only #{invalid} calls with invalid input raised: that path did not run")
    run.check(texts.any? { |t| t.include?('LibKV::AuthError') },
              "#{who}: no AuthError was seen: the wrong-credential paths did not run")
    from_hiera = puppet.last || {}
    first = Array(from_hiera['results']).first || {}
    run.check(first['result'] == true && Array(from_hiera['logs']).any? { |l| l.include?("store=#{hiera['libkv::url']} ok") },
              "#{who}: a call without url and auth did not use Hiera's libkv::url and libkv::auth: #{first.inspect}")
  end
  counts = secrets.transform_values { |secret| captured.scan(secret).size }
  counts.each do |name, count|
    next run.check(true, '') if count.zero?

    at = captured.index(secrets[name])
    around = captured[[at - 240, 0].max, 240 + secrets[name].size + 60].gsub(secrets[name], '<SECRET>')
    run.check(false, "the #{name} appears #{count} times, e.g. ...#{around.inspect}...")
  end
  run.say("#{secrets.size} secrets searched for (#{secrets.keys.first(6).join(', ')}, and each line of the client key) " \
          "in #{captured.bytesize} bytes from #{engines.size} Rubies: #{counts.values.sum} occurrences")
end
