# frozen_string_literal: true

# Builds the Rust crate in this directory into libkv/libkv.so (Init_libkv),
# loaded from Ruby with `require "libkv/libkv"`, and the libkv command
# (crates/libkv-cli) into libkv/bin/libkv, which the gem's exe/libkv runs.
#
# Run by `gem install` (inside the unpacked gem's ext/libkv) and by
# `rake compile` (rake-compiler, from tmp/<platform>/libkv/<ruby>/).
require "mkmf"

rb_sys =
  begin
    require "rb_sys/mkmf"
    true
  rescue LoadError
    false
  end

src_dir = File.realpath(__dir__)
root_dir = File.expand_path("../..", src_dir) # the Cargo workspace

# rustup installs into ~/.cargo/bin, which a non-login shell may lack on PATH.
cargo = find_executable("cargo") ||
        find_executable("cargo", File.join(ENV.fetch("CARGO_HOME", File.join(Dir.home, ".cargo")), "bin")) ||
        abort("cargo not found: install Rust (https://rustup.rs) or put cargo on PATH")

# The rules that build the libkv command with the extension's cargo, in the same
# target dir (so the core is compiled once), and install it beside the
# extension before install-so (which may remove that target dir).
def command_rules(cargo, root_dir, target_dir, locked)
  <<~MAKE

    # The libkv command (crates/libkv-cli), installed as libkv/bin/libkv.
    LIBKV_COMMAND_TARGET_DIR = #{target_dir}
    install-so: install-command
    install-command:
    \tCARGO_TARGET_DIR="$(LIBKV_COMMAND_TARGET_DIR)" "#{cargo}" build --release#{" --locked" if locked} --manifest-path "#{File.join(root_dir, "crates", "libkv-cli", "Cargo.toml")}"
    \t$(MAKEDIRS) "$(RUBYARCHDIR)/bin"
    \t$(INSTALL_PROG) "$(LIBKV_COMMAND_TARGET_DIR)/release/libkv" "$(RUBYARCHDIR)/bin/libkv"
    .PHONY: install-command
  MAKE
end

# An unpacked gem (built in place, no .git) builds against the packaged
# Cargo.lock.
packaged = File.realpath(Dir.pwd) == src_dir && !File.exist?(File.join(root_dir, ".git"))
locked = packaged && File.exist?(File.join(root_dir, "Cargo.lock"))

if rb_sys
  create_rust_makefile("libkv/libkv")
  File.open("Makefile", "a") { |mf| mf.puts command_rules(cargo, root_dir, "$(RB_SYS_CARGO_TARGET_DIR)", locked) }
  exit
end

# Without the rb_sys gem, write a small Makefile that drives cargo itself.

# An unpacked gem (built in place, no .git) is built once and never revisited:
# it gets a private target dir that `make install` removes, so the installed
# gem does not keep hundreds of MB of cargo output, and it builds --locked
# against the packaged Cargo.lock. A development tree shares the workspace's
# target/ with plain cargo and may update Cargo.lock. CARGO_TARGET_DIR wins.
target_dir = ENV["CARGO_TARGET_DIR"] ||
             File.join(packaged ? Dir.pwd : root_dir, "target")
private_target = packaged && !ENV["CARGO_TARGET_DIR"]

# cargo names the cdylib after the crate ("libkv" -> liblibkv.so).
cargo_dylib =
  case RbConfig::CONFIG["host_os"]
  when /darwin/ then "liblibkv.dylib"
  when /mswin|mingw/ then "libkv.dll"
  else "liblibkv.so"
  end

File.open("Makefile", "w") do |mf|
  mf.puts configuration($srcdir)
  mf.puts <<~MAKE
    # target_prefix stays a variable: rake-compiler installs with target_prefix=
    target_prefix = /libkv
    TARGET = libkv
    DLLIB = $(TARGET).#{RbConfig::CONFIG["DLEXT"]}
    RUBYARCHDIR = $(sitearchdir)$(target_prefix)

    CARGO = #{cargo}
    CARGO_MANIFEST = #{File.join(src_dir, "Cargo.toml")}
    CARGO_TARGET_DIR = #{target_dir}
    CARGO_FLAGS = --release#{" --locked" if locked}

    # Only set for a packaged build (see above): removed once installed.
    PRIVATE_TARGET_DIR = #{"target" if private_target}
    CLEANLIBS = $(DLLIB)
    CLEANFILES = $(PRIVATE_TARGET_DIR)
    DISTCLEANFILES =

    all: $(DLLIB)

    # Always ask cargo: it tracks the Rust sources (here and in crates/) itself.
    # RUBY tells rb-sys which Ruby to build against.
    $(DLLIB): FORCE
    \tCARGO_TARGET_DIR="$(CARGO_TARGET_DIR)" RUBY="$(RUBY)" "$(CARGO)" build $(CARGO_FLAGS) --manifest-path "$(CARGO_MANIFEST)"
    \t$(COPY) "$(CARGO_TARGET_DIR)/release/#{cargo_dylib}" $(DLLIB)

    install: install-so install-rb
    install-so: $(DLLIB)
    \t$(MAKEDIRS) "$(RUBYARCHDIR)"
    \t$(INSTALL_PROG) $(DLLIB) "$(RUBYARCHDIR)"
    \t$(RM_RF) $(PRIVATE_TARGET_DIR)
    install-rb:
    static: all

    FORCE:
    .PHONY: all install install-so install-rb static FORCE
    .PHONY: clean clean-so clean-static clean-rb
  MAKE
  mf.puts command_rules(cargo, root_dir, target_dir, locked)
  mf.puts CLEANINGS
end
