# @summary Waits until $racers compiles have reached the barrier $dir, then returns
#   what each put there. Each compile puts $value under "${dir}/${node}" on the
#   store $opts names, then polls that dir every 2 ms (and a call), so all leave
#   soon after the last arrival.
function libkv_e2e::barrier(String $dir, String $node, Data $value, Integer $racers, Hash $opts) >> Hash {
  libkv::put("${dir}/${node}", $value, $opts)
  Integer[1, 30000].each |$poll| {
    if libkv::list($dir, $opts).length >= $racers { break() }
    libkv_e2e::sleep(0.002)
  }
  $arrived = libkv::list($dir, $opts)
  unless $arrived.length >= $racers {
    fail("only ${arrived.length} of ${racers} compiles reached ${dir} at once: is max-active-instances below ${racers}?")
  }
  $arrived
}
