# frozen_string_literal: true

# libkv on JRuby, as puppetserver runs it: the C ABI library of the core
# (crates/libkv-ffi) that JRuby loads through FFI, the gem puppetserver installs,
# the specs under Debian's JRuby, and a real puppetserver compiling catalogs.
# `rake test` runs spec:jruby and puppetserver after the MRI specs.

require "fileutils"
require "rbconfig"

FFI_LIBRARY = "lib/libkv/libkv_ffi.so"

def cargo_target_dir
  ENV["CARGO_TARGET_DIR"] || File.expand_path("../target", __dir__)
end

namespace :compile do
  desc "Build the C ABI library JRuby loads through FFI (crates/libkv-ffi, release) as #{FFI_LIBRARY}"
  task ffi: :tools do
    # Replaced by a rename, never rewritten in place: a running JVM may have it mapped.
    built = File.join(cargo_target_dir, "release", "liblibkv_ffi.so")
    FileUtils.cp(built, "#{FFI_LIBRARY}.tmp")
    File.rename("#{FFI_LIBRARY}.tmp", FFI_LIBRARY)
  end
end

CLEAN.include(FFI_LIBRARY)

# The gem for JRuby: the Ruby code and the compiled C ABI library, no Rust
# sources and nothing to build at install, so `puppetserver gem install` needs
# neither Rust nor a network.
def java_gemspec
  spec = GEMSPEC.dup
  spec.platform = Gem::Platform.new("java")
  spec.extensions = []
  # The libkv command is the x86_64-linux gem's (an admin runs it with the
  # system Ruby); puppetserver's JRuby needs the library only.
  spec.executables = []
  spec.files = GEMSPEC.files.reject { |f| f.start_with?("ext/", "crates/", "vendor/", "exe/", "Cargo.") } +
               [FFI_LIBRARY]
  spec
end

namespace :gem do
  desc "Build pkg/libkv-#{GEMSPEC.version}-java.gem, libkv for puppetserver's JRuby with the C ABI library in it"
  task java: "compile:ffi" do
    require "rubygems/package"
    FileUtils.mkdir_p("pkg")
    file = Gem::Package.build(java_gemspec)
    FileUtils.mv(file, File.join("pkg", file))
    puts "built pkg/#{file}: on a Puppet server, puppetserver gem install --local pkg/#{file}"
  end
end

namespace :spec do
  desc "Run the Ruby API and Puppet function specs under JRuby (as in puppetserver), through the C ABI library, " \
       "in two processes; SPEC=files for some"
  task jruby: ["compile:ffi", :consul_double] do
    files = ENV["SPEC"] ? ENV["SPEC"].split : %w[spec/libkv spec/functions]
    sh CONSUL_DOUBLE_ENV, "ruby", "script/parallel-rspec", "--jruby", "--format", "progress", *files
  end
end

desc "End to end: a real puppetserver (Debian's, JRuby) compiles catalogs that use libkv on the file store and etcd"
task puppetserver: [:compile, "gem:java", "module:build"] do
  sh "rspec", "--format", "documentation", "spec/puppetserver/puppetserver_e2e.rb"
end

# `rake test` runs the end-to-end test in Debian roots (rakelib/platforms.rake),
# through the prebuilt gems: puppetserver 7 and 8.
task test: ["spec:jruby"]
