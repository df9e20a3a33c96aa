# @summary A lock libkv::newlock took: what libkv::unlock releases.
#
# `owner` is what the lock's key holds while the lock is held; `fence` is
# larger than every earlier acquisition's of the same key.
type Libkv::Lock = Struct[{ key => String[1], owner => String[1], fence => Integer[1], ttl => Integer[1] }]
