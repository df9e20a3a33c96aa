# @summary What libkv::atomic_get returns: a value and its sequence.
#
# libkv::atomic_put and libkv::atomic_delete take it as `previous`;
# libkv::empty_value() is the one of an absent key.
type Libkv::Previous = Struct[{ value => Any, sequence => Integer[0] }]
