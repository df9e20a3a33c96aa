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
      # The README's first example, with the agent's facts and $trusted.
      $primary = libkv::atomic_create("/e2e/primary/${node}", $trusted['certname'], $opts)
      libkv::put("/e2e/hosts/${trusted['certname']}", $facts['networking']['ip'], $opts)
      $hosts = libkv::list('/e2e/hosts', $opts)
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
          'primary'  => [$primary, libkv::get("/e2e/primary/${node}", $opts) == $trusted['certname']],
          'hosts'    => $hosts,
          'ip'       => $facts['networking']['ip'],
        },
      }
    }
  }
  'race': {
    # Racers: compiles of this catalog at once, each in its own JRuby instance,
    # incrementing one key on each store with atomic_get and atomic_put. Before
    # each store they wait for each other at a barrier, which releases them
    # within some tens of milliseconds, so their increments overlap. Each reports, per
    # store, its retries (atomic_puts that lost) and the time window of its
    # increments.
    $etcd = $stores['etcd']
    $racers = Integer($facts['libkv_e2e_racers'])
    $increments = Integer($facts['libkv_e2e_increments'])
    $arrived = libkv_e2e::barrier('/e2e/race/arrived', $node, $runtime['instance'], $racers, $etcd)
    $race = $stores.reduce({}) |$done, $store| {
      $name = $store[0]
      $opts = $store[1]
      libkv_e2e::barrier("/e2e/race/go/${name}", $node, true, $racers, $etcd)
      $start = libkv_e2e::clock()
      $retries = Integer[1, $increments].reduce(0) |$failed, $i| {
        # Until this racer's atomic_put wins; the number of those it lost.
        $lost = Integer[1, 100000].reduce(0) |$lost_so_far, $attempt| {
          $current = libkv::atomic_get('/e2e/race/counter', $opts)
          $next = $current['value'] ? { undef => 1, default => $current['value'] + 1 }
          if libkv::atomic_put('/e2e/race/counter', $next, $current, $opts) { break() }
          $lost_so_far + 1
        }
        $failed + $lost
      }
      $end = libkv_e2e::clock()
      $done + {
        $name => {
          'retries'   => $retries,
          'monotonic' => [$start['monotonic'], $end['monotonic']],
          'wall'      => [$start['wall'], $end['wall']],
        },
      }
    }
    notify { 'libkv-e2e race': message => { 'arrived' => $arrived, 'stores' => $race } }
  }
  'lockrace': {
    # Racers as above, each running sections under one lock with libkv::with_lock:
    # a plain get and put of a counter (no compare-and-swap), each section's
    # interval on the JVM's monotonic clock and its fence reported.
    $etcd = $stores['etcd']
    $racers = Integer($facts['libkv_e2e_racers'])
    $sections = Integer($facts['libkv_e2e_sections'])
    $arrived = libkv_e2e::barrier('/e2e/lockrace/arrived', $node, $runtime['instance'], $racers, $etcd)
    $race = $stores.reduce({}) |$done, $store| {
      $name = $store[0]
      $opts = $store[1]
      libkv_e2e::barrier("/e2e/lockrace/go/${name}", $node, true, $racers, $etcd)
      $intervals = Integer[1, $sections].map |$i| {
        libkv::with_lock('/e2e/lockrace/lock', $opts + { 'ttl' => 30, 'timeout' => 120 }) |$lock| {
          $start = libkv_e2e::clock()
          $count = libkv::get('/e2e/lockrace/counter', $opts)
          libkv::put('/e2e/lockrace/counter', ($count ? { undef => 0, default => $count }) + 1, $opts)
          $end = libkv_e2e::clock()
          [$start['monotonic'], $end['monotonic'], $lock['fence']]
        }
      }
      $done + { $name => $intervals }
    }
    notify { 'libkv-e2e lockrace': message => { 'arrived' => $arrived, 'stores' => $race } }
  }
  'watch': {
    # Waits, in a JRuby instance, for the key the test writes once the agent
    # has asked for its catalog: on the file store, then on etcd.
    $waited = $stores.reduce({}) |$found, $store| {
      $got = libkv::watch("/e2e/watch/${node}", $store[1] + { 'previous' => libkv::empty_value(), 'timeout' => 120 })
      $found + { $store[0] => [$got['value'], $got['sequence'] > 0, libkv_e2e::clock()['wall']] }
    }
    notify { 'libkv-e2e watch': message => $waited }
  }
  'hiera': {
    # The environment's hiera.yaml reads libkv_e2e::* keys from etcd through
    # libkv::lookup (the test writes it).
    include libkv_e2e::app
  }
  default: { fail("unknown libkv_e2e_test ${facts['libkv_e2e_test']}") }
}
