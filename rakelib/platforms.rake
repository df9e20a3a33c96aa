# frozen_string_literal: true

# Where Puppet servers are: the prebuilt gems, and the tests on Debian 13
# (Puppet 8, Ruby 3.3, JRuby 9.4, puppetserver 8) and in roots with no compiler.
#
#   rake gem:source   pkg/libkv-VERSION.gem: Rust sources, built at install
#   rake gem:native   pkg/libkv-VERSION-x86_64-linux.gem: the extension built for
#                     Ruby 3.1 (here, Debian 12) and 3.3 (in a Debian 13 root)
#   rake gem:java     pkg/libkv-VERSION-java.gem: the C ABI library (rakelib/jruby.rake)
#   rake test:debian13  every spec, the examples and puppetserver 8 in a Debian 13
#                     root with no compiler, through the prebuilt gems
#   rake test:debian12  the prebuilt gems in a Debian 12 root with no compiler:
#                     the example, a round trip, and puppetserver 7
#
# The roots are made with debootstrap and kept between runs (rakelib/debian_root.rb).

require_relative "debian_root"

# What a Puppet server or a test machine has, and nothing that compiles: no
# cc, clang, rustc, cargo or protoc.
DEBIAN12 = DebianRoot.new("debian12", "bookworm", %w[
  ruby puppet-agent puppetserver etcd-server etcd-client ruby-rspec procps ca-certificates git
])
DEBIAN13 = DebianRoot.new("debian13", "trixie", %w[
  ruby puppet-agent jruby puppetserver etcd-server etcd-client ruby-rspec ruby-rspec-puppet ruby-mocha
  ruby-puppetlabs-spec-helper rake procps ca-certificates git zookeeper sqlite3
])
# Debian 13 with what builds the extension for its Ruby 3.3, the rb_sys gem
# included (Debian 12 has none), and the machine's Rust toolchain mounted.
DEBIAN13_BUILD = DebianRoot.new("debian13-build", "trixie", %w[
  ruby-dev ruby-rb-sys libclang-dev gcc libc6-dev make protobuf-compiler libprotobuf-dev
], base: DEBIAN13)

COMPILERS = %w[cc gcc clang cargo rustc protoc].freeze
SOURCE_GEM = "pkg/libkv-#{GEMSPEC.version}.gem"
NATIVE_GEM = "pkg/libkv-#{GEMSPEC.version}-x86_64-linux.gem"
JAVA_GEM = "pkg/libkv-#{GEMSPEC.version}-java.gem"
MODULE_PACKAGE = "pkg/libkv-libkv-#{GEMSPEC.version}.tar.gz"
MODULE_FILES = %w[lib types examples metadata.json README.md REFERENCE.md CHANGELOG.md LICENSE].freeze
# The extension for each Ruby minor version the native gem carries.
NATIVE_EXTENSIONS = { "3.1" => "lib/libkv/libkv.so", "3.3" => "tmp/native/3.3/libkv.so" }.freeze
# The libkv command, one program for every Ruby (`rake compile` builds it).
COMMAND = "lib/libkv/bin/libkv"

def rust_toolchain_binds
  {
    "/opt/cargo" => ENV.fetch("CARGO_HOME", File.join(Dir.home, ".cargo")),
    "/opt/rustup" => ENV.fetch("RUSTUP_HOME", File.join(Dir.home, ".rustup")),
  }
end

# Ruby minor version of the running MRI.
def ruby_minor
  RUBY_VERSION[/\A\d+\.\d+/]
end

file SOURCE_GEM => GEMSPEC.files do
  require "rubygems/package"
  FileUtils.mkdir_p("pkg")
  file = Gem::Package.build(GEMSPEC)
  FileUtils.mv(file, SOURCE_GEM)
end

namespace :gem do
  desc "Build #{SOURCE_GEM}, the source gem (the extension is compiled at install, with Rust)"
  task source: SOURCE_GEM

  desc "Build #{NATIVE_GEM}: the extension prebuilt for Ruby #{NATIVE_EXTENSIONS.keys.join(' and ')}, " \
       "nothing to compile at install"
  task native: ["test:roots", :compile, NATIVE_EXTENSIONS.fetch("3.3")] do
    raise "this Ruby is #{RUBY_VERSION}: the native gem's 3.1 extension is built by Debian 12's" unless ruby_minor == "3.1"

    require "rubygems/package"
    stage = "tmp/native/gem"
    FileUtils.rm_rf(stage)
    spec = GEMSPEC.dup
    spec.platform = Gem::Platform.new("x86_64-linux")
    spec.extensions = []
    spec.required_ruby_version = [">= #{NATIVE_EXTENSIONS.keys.min}", "< #{NATIVE_EXTENSIONS.keys.max.succ}.dev"]
    sources = GEMSPEC.files.reject { |f| f.start_with?("ext/", "crates/", "vendor/", "Cargo.") }
    built = NATIVE_EXTENSIONS.keys.map { |minor| "lib/libkv/#{minor}/libkv.so" } + [COMMAND]
    spec.files = sources + built
    sources.each do |f|
      FileUtils.mkdir_p(File.join(stage, File.dirname(f)))
      FileUtils.cp(f, File.join(stage, f))
    end
    NATIVE_EXTENSIONS.each do |minor, so|
      FileUtils.mkdir_p(File.join(stage, "lib/libkv", minor))
      FileUtils.cp(so, File.join(stage, "lib/libkv", minor, "libkv.so"))
    end
    FileUtils.mkdir_p(File.join(stage, File.dirname(COMMAND)))
    FileUtils.cp(COMMAND, File.join(stage, COMMAND), preserve: true)
    file = Dir.chdir(stage) { Gem::Package.build(spec) }
    FileUtils.mkdir_p("pkg")
    FileUtils.mv(File.join(stage, file), File.join("pkg", file))
    puts "built pkg/#{file}: #{built.join(', ')}"
  end
end

desc "Build the source, x86_64-linux and java gems in pkg/"
task gems: ["gem:source", "gem:native", "gem:java"]

# The README promises the prebuilt gems run with glibc 2.34 or later: the newest
# glibc symbol version each prebuilt library and the command need (objdump, from
# binutils).
GLIBC_NEEDED = "2.34"
namespace :gem do
  task glibc: ["gem:native", "gem:java"] do
    [*NATIVE_EXTENSIONS.values, COMMAND, FFI_LIBRARY].each do |so|
      versions = `objdump -T #{so.shellescape}`.scan(/GLIBC_(\d+(?:\.\d+)+)/).flatten.uniq
      raise "objdump -T #{so} found no glibc symbols" if versions.empty?

      newest = versions.max_by { |v| Gem::Version.new(v) }
      if Gem::Version.new(newest) > Gem::Version.new(GLIBC_NEEDED)
        raise "#{so} needs glibc #{newest}, newer than the #{GLIBC_NEEDED} the README promises"
      end

      puts "#{so}: glibc #{newest} or later"
    end
  end
end

# The extension for Ruby 3.3, built in the Debian 13 build root by `gem install`
# of the source gem, as a user with Rust would, there through the rb_sys gem.
# Rebuilt when what it is built from changes: the Rust sources and extconf.rb.
file NATIVE_EXTENSIONS.fetch("3.3") => GEMSPEC.files.select { |f| f.start_with?("ext/", "crates/", "vendor/", "Cargo.") } do |t|
  Rake::Task[SOURCE_GEM].invoke
  out = File.expand_path(File.dirname(t.name))
  FileUtils.mkdir_p(out)
  script = <<~SH
    ruby -e 'require "rb_sys/mkmf"' # the rb_sys gem is there, so the gem's extconf.rb uses it
    gem install --local --no-document --install-dir /tmp/gems /srv/in/libkv.gem
    grep -q RB_SYS /tmp/gems/gems/libkv-#{GEMSPEC.version}/ext/libkv/Makefile # written by rb_sys
    so=$(find /tmp/gems -path '*/libkv/libkv.so' | head -n 1)
    test -n "$so"
    ruby -I /tmp/gems/gems/libkv-#{GEMSPEC.version}/lib -I "$(dirname "$(dirname "$so")")" \\
      -e 'require "libkv"; s = LibKV.open("mock://"); s.put("/k", 1); exit(s.get("/k") == 1)'
    # The libkv command, built and installed with the extension, runs.
    GEM_HOME=/tmp/gems /tmp/gems/bin/libkv --version | grep -qx 'libkv #{GEMSPEC.version}'
    cp "$so" /srv/out/libkv.so.tmp
    mv /srv/out/libkv.so.tmp /srv/out/libkv.so
  SH
  env = { "PATH" => "/opt/cargo/bin:#{DebianRoot::PATH}", "CARGO_HOME" => "/opt/cargo", "RUSTUP_HOME" => "/opt/rustup" }
  DEBIAN13_BUILD.run(script, env: env, files: { "/srv/in/libkv.gem" => SOURCE_GEM },
                             binds: rust_toolchain_binds.merge("/srv/out" => out))
end

# The tree of this checkout's tracked files as the working tree has them (what
# `git stash create` records; HEAD when nothing changed).
def working_tree
  stash = `git stash create`.strip
  stash.empty? ? "HEAD" : stash
end

# A copy of the tracked files, for a root's /srv/libkv: no build in it.
def export_tree(dest)
  FileUtils.rm_rf(dest)
  FileUtils.mkdir_p(dest)
  sh "git archive #{working_tree} | tar -x -C #{dest.shellescape}"
end

def no_compiler_check
  "for tool in #{COMPILERS.join(' ')}; do if command -v $tool; then echo \"$tool is here\" >&2; exit 1; fi; done\n"
end

# Runs +script+ in +root+ at /srv/libkv (this checkout's tree), with the gems
# in /srv/pkg and the Consul test double; the libkv specs there load the
# installed gem.
def run_in_root(root, script)
  tree = File.expand_path("tmp/roots/tree")
  export_tree(tree)
  double = release_path("consul-double")
  root.run(no_compiler_check + script,
           chdir: "/srv/libkv",
           env: { "LIBKV_TEST_INSTALLED_GEM" => "1", "LIBKV_CONSUL_DOUBLE" => "/srv/bin/consul-double",
                  "LIBKV_JAVA_GEM" => "/srv/#{JAVA_GEM}", "LIBKV_MODULE_PACKAGE" => "/srv/#{MODULE_PACKAGE}" },
           files: { "/srv/libkv" => tree, "/srv/pkg" => "pkg", "/srv/bin/consul-double" => double })
end

# The Puppet module package: what a modulepath needs (lib/, types/, metadata.json)
# and its documents, tracked files only, so never a compiled library: the gems
# carry those. `puppet module install` takes it, as it takes a package from the Forge.

namespace :module do
  desc "Build #{MODULE_PACKAGE}, the Puppet module (tracked files only, no compiled code)"
  task :build do
    FileUtils.mkdir_p("pkg")
    sh "git", "archive", "--format=tar.gz", "--prefix=libkv-libkv-#{GEMSPEC.version}/", "-o", MODULE_PACKAGE,
       working_tree, *MODULE_FILES
    puts "built #{MODULE_PACKAGE}: puppet module install #{MODULE_PACKAGE}"
  end
end

# The roots and the Ruby 3.3 extension take some minutes of downloads and a
# build: `rake test` starts them at once in a rake process of their own (its own
# working directory: rake-compiler changes this one's), while the tests on this
# machine run; its output goes to tmp/roots/prepare.log, shown when it fails.
# What needs them waits for it (test:roots).
namespace :roots do
  task :prepare do
    [DEBIAN13_BUILD, DEBIAN12].each(&:ensure!)
    Rake::Task[NATIVE_EXTENSIONS.fetch("3.3")].invoke
  end
end

namespace :test do
  task :prepare do
    next if $libkv_roots

    log = File.expand_path("tmp/roots/prepare.log")
    FileUtils.mkdir_p(File.dirname(log))
    puts "making the Debian roots and the Ruby 3.3 extension in the background: #{log}"
    pid = Process.spawn(RbConfig.ruby, "-S", "rake", "roots:prepare", out: [log, "w"], err: %i[child out],
                                                                      pgroup: true)
    $libkv_roots = { pid: pid, log: log }
    # Stopped when rake ends without waiting for it; only by this process, not by a
    # child forked from it, which runs the same at_exit hooks when it exits.
    owner = Process.pid
    at_exit do
      Process.kill("TERM", -pid) if Process.pid == owner && $libkv_roots[:status].nil?
    rescue SystemCallError
      nil
    end
  end

  task :roots do
    next unless $libkv_roots

    $libkv_roots[:status] ||= Process.wait2($libkv_roots[:pid]).last
    next if $libkv_roots[:status].success?

    raise "making the Debian roots and the Ruby 3.3 extension failed (#{$libkv_roots[:status]}); " \
          "the last lines of #{$libkv_roots[:log]}:\n#{File.readlines($libkv_roots[:log]).last(40).join}"
  end

  desc "Debian 13 (Puppet 8, Ruby 3.3, JRuby 9.4, puppetserver 8), in a root with no compiler: " \
       "every spec through the prebuilt gems, the examples, puppetserver end to end"
  task debian13: ["gem:glibc", "module:build", :consul_double] do
    run_in_root(DEBIAN13, <<~SH)
      gem install --local --no-document /srv/#{NATIVE_GEM}
      rspec --format documentation spec/prebuilt/prebuilt_gem.rb
      ruby script/parallel-rspec --format progress spec
      jruby -S gem install --local --no-document --install-dir /srv/jruby-gems /srv/#{JAVA_GEM}
      LIBKV_JRUBY_GEM_PATH=/srv/jruby-gems ruby script/parallel-rspec --jruby --format progress spec/libkv spec/functions
      rspec --format documentation spec/puppetserver/puppetserver_e2e.rb
    SH
  end

  desc "Debian 12 (Puppet 7, Ruby 3.1, puppetserver 7), in a root with no compiler: the prebuilt gems " \
       "install, run the example and a round trip, and work in puppetserver"
  task debian12: ["gem:glibc", "module:build", :consul_double] do
    run_in_root(DEBIAN12, <<~SH)
      gem install --local --no-document /srv/#{NATIVE_GEM}
      rspec --format documentation spec/prebuilt/prebuilt_gem.rb
      rspec --format documentation spec/puppetserver/puppetserver_e2e.rb
    SH
  end
end

namespace :root do
  desc "Run CMD in the Debian root ROOT (debian12, debian13) as the tests do, the prebuilt MRI gem installed: " \
       "ROOT=debian13 CMD='rspec spec/functions' rake root:run"
  task run: ["gem:native", "gem:java", "module:build", :consul_double] do
    root = { "debian12" => DEBIAN12, "debian13" => DEBIAN13 }.fetch(ENV.fetch("ROOT", "debian13"))
    run_in_root(root, "gem install --local --no-document /srv/#{NATIVE_GEM}\n#{ENV.fetch('CMD')}\n")
  end
end

task test: ["test:debian13", "test:debian12"]
Rake::Task[:test].prerequisites.unshift("test:prepare")
