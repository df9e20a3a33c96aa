# frozen_string_literal: true

require_relative "lib/libkv/version"

Gem::Specification.new do |spec|
  spec.name = "libkv"
  spec.version = LibKV::VERSION
  spec.summary = "Key/value store functions for Puppet over a Rust core (mock, file, etcd, Consul)"
  spec.license = "Apache-2.0"
  spec.authors = ["libkv contributors"]
  spec.required_ruby_version = ">= 2.6"

  # Dir globs rather than `git ls-files`, so the gem also builds from a plain
  # copy or tarball. Sources only: the Rust extension is compiled at install
  # time, so no built .so and no cargo target/ may end up in the package.
  spec.files = Dir.chdir(__dir__) do
    Dir[
      "lib/**/*.rb", "lib/puppet/**/*", "types/**/*", "exe/*",
      "ext/libkv/**/*.{rs,rb,toml}", "crates/**/*.{rs,toml}",
      "vendor/**/*.{rs,toml,md}", "vendor/**/LICENSE",
      "Cargo.toml", "Cargo.lock", "README.md", "CHANGELOG.md", "metadata.json", "LICENSE"
    ].uniq.reject do |f|
      File.directory?(f) || f.end_with?(".so", ".bundle", ".dll") || f.split("/").include?("target")
    end
  end

  spec.extensions = ["ext/libkv/extconf.rb"]
  # The libkv command: exe/libkv runs the program built with the extension
  # (crates/libkv-cli), installed as lib/libkv/bin/libkv.
  spec.bindir = "exe"
  spec.executables = ["libkv"]
  spec.require_paths = ["lib"]
end
