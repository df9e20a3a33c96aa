# The catalog of libkv's puppetserver end-to-end test (puppetserver_e2e.rb). The
# agent's facts name the stores and the test; every result goes into a notify's
# message, so the test reads it from the compiled catalog.

$runtime = libkv_e2e::runtime()
$node = $trusted['certname']
$stores = {
  'file' => { 'url' => $facts['libkv_e2e_file_url'] },
  'etcd' => { 'url' => $facts['libkv_e2e_etcd_url'] },
}

notify { 'libkv-e2e runtime': message => $runtime }

case $facts['libkv_e2e_test'] {
  'roundtrip': {
    $values = {
      "/e2e/${node}/password" => 'correct horse battery staple',
      "/e2e/${node}/port"     => 8080,
      "/e2e/${node}/ratio"    => 0.75,
      "/e2e/${node}/servers"  => ['web01', 'web02'],
      "/e2e/${node}/settings" => { 'tls' => true, 'peers' => { 'db' => '10.0.0.2' }, 1 => undef },
      "/e2e/${node}/keytab"   => Binary('BQIAAABHAAIAC0VYQU1QTEUuQ09N', '%B'),
    }
    $stores.each |$name, $opts| {
      $types = $values.reduce({}) |$found, $kv| {
        libkv::put($kv[0], $kv[1], $opts)
        $back = libkv::get($kv[0], $opts)
        unless $back == $kv[1] and type($back, 'generalized') == type($kv[1], 'generalized') {
          fail("libkv on ${name}: ${kv[0]} read back as ${back}, not ${kv[1]}")
        }
        $found + { $kv[0] => String(type($back, 'generalized')) }
      }
      $seeded = libkv::get('/e2e/seeded', $opts)
      $first = libkv::atomic_create("/e2e/${node}/created", $node, $opts)
      $again = libkv::atomic_create("/e2e/${node}/created", 'again', $opts)
      $current = libkv::atomic_get("/e2e/${node}/port", $opts)
      $swapped = libkv::atomic_put("/e2e/${node}/port", 8443, $current, $opts)
      $stale = libkv::atomic_put("/e2e/${node}/port", 9000, $current, $opts)
      notify { "libkv-e2e ${name}":
        message => {
          'provider' => libkv::provider($opts),
          'types'    => $types,
          'seeded'   => $seeded,
          'created'  => [$first, $again],
          'swapped'  => [$swapped, $stale],
          'port'     => libkv::get("/e2e/${node}/port", $opts),
          'listed'   => libkv::list("/e2e/${node}", $opts).keys.sort,
          'missing'  => libkv::get("/e2e/${node}/missing", $opts),
        },
      }
    }
  }
  'race': {
    # Wait until every racer's compile is running (each in its own JRuby
    # instance), then all increment one key on each store at once.
    $etcd = $stores['etcd']
    $racers = Integer($facts['libkv_e2e_racers'])
    libkv::put("/e2e/race/arrived/${node}", $runtime['instance'], $etcd)
    $arrived = Integer[1, 600].reduce(undef) |$seen, $i| {
      if $seen { $seen } else {
        $now = libkv::list('/e2e/race/arrived', $etcd)
        if $now.length >= $racers { $now } else { libkv_e2e::sleep(0.1) }
      }
    }
    unless $arrived { fail("only some of ${racers} compiles ran at once: is max-active-instances below ${racers}?") }
    $increments = Integer($facts['libkv_e2e_increments'])
    $stores.each |$name, $opts| {
      Integer[1, $increments].each |$i| {
        Integer[1, 100000].each |$attempt| {
          $current = libkv::atomic_get('/e2e/race/counter', $opts)
          $next = $current['value'] ? { undef => 1, default => $current['value'] + 1 }
          if libkv::atomic_put('/e2e/race/counter', $next, $current, $opts) {
            break()
          }
        }
      }
    }
    notify { 'libkv-e2e race': message => { 'arrived' => $arrived } }
  }
  default: { fail("unknown libkv_e2e_test ${facts['libkv_e2e_test']}") }
}
