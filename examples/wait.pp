# Waits, at most a minute, until another node publishes its address under
# /libkv_example/nodes/, then uses what it published; a node that publishes
# before this one starts is found at once.
#
#   FACTER_libkv_url=file:///tmp/kv puppet apply --modulepath <dir holding libkv> examples/wait.pp
#   # meanwhile, on another node (or shell):
#   libkv put file:///tmp/kv /libkv_example/nodes/db01 10.0.0.5

$opts = { 'url' => $facts['libkv_url'] }

$nodes = libkv::watchtree('/libkv_example/nodes', $opts + { 'previous' => {}, 'timeout' => 60 })
if $nodes.empty {
  fail('no node published its address under /libkv_example/nodes within a minute')
}
$nodes.each |$name, $found| {
  notice("${name} is at ${found['value']} (sequence ${found['sequence']})")
}
