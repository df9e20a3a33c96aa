# frozen_string_literal: true

require "digest"
require "fileutils"
require "shellwords"
require "tmpdir"

# A Debian root made with debootstrap, for running libkv's tests on another
# Debian release (Debian 13: Puppet 8, Ruby 3.3, JRuby 9.4, puppetserver 8) or
# on a system with no compiler at all (the prebuilt gems).
#
# A root is made once per machine and kept in LIBKV_ROOT_CACHE (default
# /var/cache/libkv-roots), under a name that holds a digest of its suite, mirror
# and package list: change the list and a new root is made. It is made in a
# temporary directory and renamed into place only once complete, under a lock,
# so that an interrupted build is never used. A root given a +base+ is a layer:
# only what its packages add to the base (an overlayfs upper directory).
#
# Nothing runs in a cached root itself: each #run mounts a fresh overlay on top
# of it, so what a test writes there is thrown away, and every run starts from
# the same root. The mounts (the overlay, /proc, /dev, /sys) are made in a mount
# namespace of the run's own (unshare -m), so they are unmounted when its last
# process ends, whatever happens, and are never seen outside it: removing a run's
# directory can never reach through a mount into the host.
class DebianRoot
  # Bumped when the way a root is made changes, so that old roots are not reused.
  FORMAT = 1
  MIRROR = ENV.fetch("LIBKV_DEBIAN_MIRROR", "http://deb.debian.org/debian")
  CACHE = ENV.fetch("LIBKV_ROOT_CACHE", "/var/cache/libkv-roots")
  PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

  attr_reader :name, :suite, :packages, :base

  # +name+: a word for the directory; +suite+: bookworm (Debian 12) or trixie
  # (Debian 13); +packages+: installed with apt-get, without recommends.
  def initialize(name, suite, packages, base: nil)
    @name = name
    @suite = suite
    @packages = packages.sort.uniq
    @base = base
  end

  def key
    @key ||= Digest::SHA256.hexdigest([FORMAT, suite, MIRROR, packages, base && base.key].inspect)[0, 16]
  end

  def dir
    File.join(CACHE, "#{name}-#{key}")
  end

  # The directories of this root's layers, the lowest first.
  def layers
    (base ? base.layers : []) + [dir]
  end

  # Makes the root unless it is in the cache; returns self. What the making
  # prints goes to the file +log+ when given.
  def ensure!(log: nil)
    base&.ensure!(log: log)
    return self if complete?

    FileUtils.mkdir_p(CACHE)
    File.open(File.join(CACHE, ".lock"), File::RDWR | File::CREAT, 0o644) do |lock|
      lock.flock(File::LOCK_EX)
      build(log) unless complete?
    end
    self
  end

  def complete?
    File.file?(File.join(dir, ".libkv-root"))
  end

  # Runs +command+ (an Array, or a shell command String) in a fresh overlay of
  # this root, as root, in +chdir+, with a clean environment plus +env+. +files+
  # maps a path in the root to a host path whose contents are copied there first
  # (a directory whole). +binds+ maps a path in the root to a host directory
  # mounted there (read-write). Its output goes to the file +log+ when given.
  # Raises unless the command succeeds, unless +check+ is false; returns true on
  # success.
  def run(command, env: {}, chdir: "/", files: {}, binds: {}, check: true, log: nil)
    ensure!(log: log)
    Dir.mktmpdir("run-", scratch) do |tmp|
      upper = File.join(tmp, "upper")
      work = File.join(tmp, "work")
      merged = File.join(tmp, "merged")
      [upper, work, merged].each { |d| FileUtils.mkdir_p(d) }
      files.each do |inside, host|
        target = File.join(upper, inside)
        FileUtils.mkdir_p(File.dirname(target))
        FileUtils.cp_r(host, target, preserve: true)
      end
      ok = system("unshare", "--mount", "--propagation", "private", "--", "sh", "-ec",
                  mount_script(merged, layers, upper, work, binds) + "exec " +
                  chroot_command(merged, command, env, chdir).shelljoin, **redirect(log))
      raise "#{describe}: #{Array(command).join(' ')} failed (#{$?})#{log_tail(log)}" if check && !ok

      ok
    end
  end

  def describe
    "the Debian #{suite} root #{dir}"
  end

  private

  # Run directories: beside the cache, on the same file system as the layers.
  def scratch
    File.join(CACHE, "runs").tap { |d| FileUtils.mkdir_p(d) }
  end

  def build(log)
    tmp = "#{dir}.tmp"
    FileUtils.rm_rf(tmp)
    if base
      build_layer(tmp, log)
    else
      build_base(tmp, log)
    end
    File.write(File.join(tmp, ".libkv-root"), "#{suite}\n#{packages.join("\n")}\n")
    File.rename(tmp, dir)
    remove_stale
  end

  # Roots of this name made for another package list or format: replaced by this
  # one, so that the cache does not grow with every change of a list. (Never
  # mounted outside a run's own namespace, so removing them reaches nothing else.)
  def remove_stale
    Dir.glob(File.join(CACHE, "#{name}-*")).each do |other|
      next if other == dir || !File.basename(other).match?(/\A#{Regexp.escape(name)}-\h{16}(\.tmp)?\z/)

      FileUtils.rm_rf(other)
    end
  end

  # debootstrap, then the packages with apt-get inside.
  def build_base(tmp, log)
    sh_or_raise(log, "debootstrap", "--variant=minbase", suite, tmp, MIRROR)
    FileUtils.cp("/etc/resolv.conf", File.join(tmp, "etc", "resolv.conf"))
    sh_or_raise(log, "unshare", "--mount", "--propagation", "private", "--", "sh", "-ec",
                mount_script(tmp, [], nil, nil, {}) + "exec " +
                chroot_command(tmp, install_command, {}, "/").shelljoin)
  end

  # The packages, installed in an overlay of the base: the upper directory,
  # which holds only what they add, is the layer.
  def build_layer(tmp, log)
    %w[upper work merged].each { |d| FileUtils.mkdir_p(File.join(tmp, d)) }
    merged = File.join(tmp, "merged")
    sh_or_raise(log, "unshare", "--mount", "--propagation", "private", "--", "sh", "-ec",
                mount_script(merged, base.layers, File.join(tmp, "upper"), File.join(tmp, "work"), {}) + "exec " +
                chroot_command(merged, install_command, {}, "/").shelljoin)
    # The layer is the upper directory alone.
    FileUtils.rm_rf([File.join(tmp, "work"), merged])
    upper = File.join(tmp, "upper")
    Dir.children(upper).each { |entry| File.rename(File.join(upper, entry), File.join(tmp, entry)) }
    Dir.rmdir(upper)
  end

  def install_command
    ["sh", "-ec", "apt-get update -q; apt-get install -y -q --no-install-recommends #{packages.shelljoin}; " \
                  "apt-get clean"]
  end

  # The shell lines that mount the root at +merged+ (an overlay of +lower+, the
  # lowest first, with +upper+ on top, when +upper+ is given), and /proc, /dev,
  # /sys and the +binds+ inside it.
  def mount_script(merged, lower, upper, work, binds)
    lines = []
    if upper
      lower = lower.reverse.join(":")
      lines << ["mount", "-t", "overlay", "overlay", "-o", "lowerdir=#{lower},upperdir=#{upper},workdir=#{work}",
                merged].shelljoin
    end
    lines << ["mount", "-t", "proc", "proc", File.join(merged, "proc")].shelljoin
    lines << ["mount", "--rbind", "/dev", File.join(merged, "dev")].shelljoin
    lines << ["mount", "-t", "sysfs", "sysfs", File.join(merged, "sys")].shelljoin
    binds.each do |inside, host|
      target = File.join(merged, inside)
      lines << ["mkdir", "-p", target].shelljoin
      lines << ["mount", "--bind", host, target].shelljoin
    end
    lines.map { |l| "#{l}\n" }.join
  end

  def chroot_command(merged, command, env, chdir)
    script = command.is_a?(Array) ? command.shelljoin : command
    vars = { "PATH" => PATH, "HOME" => "/root", "LANG" => "C.UTF-8", "DEBIAN_FRONTEND" => "noninteractive",
             "TERM" => ENV.fetch("TERM", "dumb") }.merge(env)
    ["chroot", merged, "/usr/bin/env", "-i", *vars.map { |k, v| "#{k}=#{v}" }, "sh", "-ec",
     "cd #{chdir.shellescape}\n#{script}"]
  end

  def sh_or_raise(log, *cmd)
    system(*cmd, **redirect(log)) or raise "#{describe}: #{cmd.first(3).join(' ')} failed (#{$?})#{log_tail(log)}"
  end

  def redirect(log)
    log ? { out: [log, "a"], err: [:child, :out] } : {}
  end

  def log_tail(log)
    log ? "; the last lines of #{log}:\n#{File.readlines(log).last(30).join}" : ""
  end
end
