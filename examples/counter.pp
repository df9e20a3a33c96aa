# Adds 1 to the counter at /libkv_example/counter, $facts['libkv_increments']
# times, each with an atomic_get/atomic_put retry loop: run it in several processes
# at once and no increment is lost.
#
#   FACTER_libkv_url=file:///tmp/kv FACTER_libkv_increments=10 \
#     puppet apply --modulepath <dir holding libkv> examples/counter.pp

$opts = { 'url' => $facts['libkv_url'] }

Integer($facts['libkv_increments']).each |$i| {
  100000.each |$attempt| {
    $current = libkv::atomic_get('/libkv_example/counter', $opts)
    $next = $current['value'] ? { undef => 1, default => $current['value'] + 1 }
    if libkv::atomic_put('/libkv_example/counter', $next, $current, $opts) {
      break()
    }
  }
}
notice("counter is now ${libkv::get('/libkv_example/counter', $opts)}")
