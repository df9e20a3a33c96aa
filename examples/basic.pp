# Stores values of several types, reads each back, and checks it came back the
# same: in libkv's default store (legacy-simp6://, under Puppet's vardir), or in
# the store the fact libkv_url names.
#
#   rake example    (or: puppet apply --modulepath <dir holding libkv> examples/basic.pp)
#   FACTER_libkv_url=etcd://127.0.0.1:2379/demo puppet apply --modulepath ... examples/basic.pp

$opts = $facts['libkv_url'] ? { undef => {}, default => { 'url' => $facts['libkv_url'] } }

$values = {
  '/libkv_example/password' => 'correct horse battery staple',
  '/libkv_example/port'     => 8080,
  '/libkv_example/ratio'    => 0.75,
  '/libkv_example/enabled'  => true,
  '/libkv_example/servers'  => ['web01', 'web02'],
  '/libkv_example/settings' => { 'tls' => true, 'peers' => { 'db' => '10.0.0.2' } },
  '/libkv_example/keytab'   => Binary('BQIAAABHAAIAC0VYQU1QTEUuQ09N', '%B'),
}

$values.each |$key, $value| {
  libkv::put($key, $value, $opts)
  $back = libkv::get($key, $opts)
  unless $back == $value and type($back, 'generalized') == type($value, 'generalized') {
    fail("libkv example: ${key} read back as ${back}, not ${value}")
  }
  notice("stored and read back ${key} = ${back} (${type($back, 'generalized')})")
}

# An atomic counter: how often this example has run against this store.
$runs = libkv::atomic_get('/libkv_example/runs', $opts)
$next = $runs['value'] ? { undef => 1, default => $runs['value'] + 1 }
if libkv::atomic_put('/libkv_example/runs', $next, $runs, $opts) {
  notice("this example has run ${next} time(s) against this store")
}

notice("libkv::list('/libkv_example') has ${libkv::list('/libkv_example', $opts).length} keys")
notice("the store: ${libkv::info($opts)}")
