# frozen_string_literal: true

module LibKV
  # The same as version in Cargo.toml (a test of crates/libkv-ffi checks it).
  VERSION = "0.1.0"
end
