# frozen_string_literal: true

require 'securerandom'

# The error and debug paths run with a password, a token and key files whose
# contents are known: every line a process printed, every exception message,
# inspect, info() and Puppet log line (debug level) is captured, and the
# occurrences of each secret are counted. The count must be 0.
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
    ['file store, given a password', "file://#{dir}/store", { 'password' => etcd::PASSWORD }],
    ['an auth setting libkv does not know', "file://#{dir}/store", { 'passwd' => wrong_password }],
    ['mock store, given a token', 'mock://', { 'token' => consul::TOKEN }],
  ]
  stderr = File.join(dir, 'stderr')
  pid, out = Stress.spawn_worker('secrets', { dir: dir, setups: setups.map { |_, url, auth| { url: url, auth: auth } } },
                                 err: stderr)
  status = Stress.wait_all([pid], 300)[pid]
  printed = out.value
  result = Stress.result_of(out) || {}
  run.check(status&.success? && result.key?('texts'), "the process running the paths failed: #{status.inspect}")
  captured = printed + File.read(stderr)
  logs = Array(result['puppet']).flat_map { |p| p['logs'] }
  calls = Array(result['puppet']).flat_map { |p| p['results'] }
  errors = calls.count { |c| c['error'] }
  levels = logs.group_by { |l| l[/\A\w+/] }.transform_values(&:size)
  libkv_debug = logs.count { |l| l.start_with?('debug: libkv::') }
  run.say("#{setups.size} setups; #{Array(result['texts']).size} texts from the Ruby API, #{calls.size} Puppet calls " \
          "(#{errors} raised), #{logs.size} Puppet log lines #{levels.inspect} (#{libkv_debug} libkv debug lines); " \
          "#{captured.bytesize} bytes captured in all")
  run.check(libkv_debug.positive?, 'no libkv debug line was logged: the debug path did not run')
  run.check(Array(result['texts']).any? { |t| t.include?('LibKV::AuthError') },
            'no AuthError was seen: the wrong-credential paths did not run')
  counts = secrets.transform_values { |secret| captured.scan(secret).size }
  counts.each do |name, count|
    next run.check(true, '') if count.zero?

    line = captured.lines.find { |l| l.include?(secrets[name]) }.to_s
    run.check(false, "the #{name} appears #{count} times, e.g. #{line.gsub(secrets[name], '<SECRET>').strip[0, 300]}")
  end
  run.say("#{secrets.size} secrets searched for (#{secrets.keys.first(6).join(', ')}, and each line of the client key): " \
          "#{counts.values.sum} occurrences")
end
