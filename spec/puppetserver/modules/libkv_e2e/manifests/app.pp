# A class whose parameters Hiera supplies: per node from etcd through
# libkv::lookup, else from the environment's YAML data.
class libkv_e2e::app (
  Integer $port,
  Array[String] $hosts,
  String $label,
) {
  notify { 'libkv-e2e hiera':
    message => { 'port' => $port, 'hosts' => $hosts, 'label' => $label },
  }
}
