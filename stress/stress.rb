# frozen_string_literal: true

# What the stress and fault runs share: a record of each run (its cases and the
# failures it found), child processes with deadlines, and the stores to run on.

require 'json'
require 'open3'
require 'rbconfig'
require 'tmpdir'
require 'fileutils'

module Stress
  ROOT = File.expand_path('..', __dir__)
  WORKER = File.join(__dir__, 'worker.rb')
  TARGET = ENV['CARGO_TARGET_DIR'] || File.join(ROOT, 'target')

  $LOAD_PATH.unshift(File.join(ROOT, 'lib'))
  require 'libkv'
  # The test suite's launchers of etcd and the Consul test double.
  require_relative '../spec/support/etcd'
  require_relative '../spec/support/consul'
  require_relative '../spec/support/zookeeper'
  require_relative 'operations'
  require_relative 'processes'

  # One run: what it tried (cases) and what it found (failures: a count, and the
  # messages that tell them), and the parts it could not run here (skipped).
  class Run
    attr_reader :name, :cases, :failed, :failures, :skipped, :seconds, :seed

    def initialize(name, seed)
      @name = name
      @seed = seed
      @cases = 0
      @failed = 0
      @failures = []
      @skipped = []
      @seconds = 0.0
    end

    # Counts one case; a false +ok+ records +message+ as a failure.
    def check(ok, message)
      @cases += 1
      fail!(message) unless ok
      ok
    end

    # Counts +count+ cases at once, of which each of the +failed+ messages is a
    # failure: all are counted, the first +shown+ are told.
    def tally(count, failed, shown: 5)
      @cases += count
      failures!(failed, shown: shown)
    end

    # Records each of +failed+ as a failure, telling the first +shown+.
    def failures!(failed, shown: 5)
      failed.first(shown).each { |m| fail!(m) }
      return if failed.size <= shown

      @failed += failed.size - shown
      @failures << "... and #{failed.size - shown} more failures like these"
      say("FAILED: ... and #{failed.size - shown} more failures like these")
    end

    def fail!(message)
      @failed += 1
      @failures << message
      say("FAILED: #{message}")
    end

    # A part of the run that cannot run here: shown in the summary table.
    def skip!(part, reason)
      @skipped << part
      say("SKIPPED #{part}: #{reason}")
    end

    def say(line)
      puts "  [#{@name}] #{line}"
      $stdout.flush
    end

    def timed
      started = Stress.monotonic
      yield
    ensure
      @seconds = Stress.monotonic - started
    end

    def to_h
      { 'name' => @name, 'cases' => @cases, 'failed' => @failed,
        'failures' => @failures.map { |m| m.dup.force_encoding(Encoding::UTF_8).scrub }, 'skipped' => @skipped,
        'seconds' => @seconds }
    end
  end

  @runs = {}

  class << self
    attr_reader :runs

    def quick?
      ENV['QUICK'].to_s != '' && ENV['QUICK'] != '0'
    end

    # Registers a run: +block+ gets the Run to record into and a seeded Random.
    def define(name, summary, &block)
      @runs[name] = [summary, block]
    end

    # Removed when the process that made it exits (not by a forked child).
    def scratch
      @scratch ||= Dir.mktmpdir('libkv-stress').tap do |dir|
        owner = Process.pid
        at_exit { FileUtils.rm_rf(dir) if Process.pid == owner }
      end
    end

    # A directory of its own below the scratch directory.
    def tmpdir(name)
      @dirs = (@dirs || 0) + 1
      File.join(scratch, "#{name}-#{@dirs}").tap { |d| FileUtils.mkdir_p(d) }
    end

    # The stores the runs use by name: { url:, auth: }. etcd and Consul (the test
    # double, or a real Consul when LIBKV_TEST_CONSUL_URL names one) start on
    # first use.
    def store(name, prefix)
      case name
      when 'mock' then { url: "mock://#{prefix.delete('/')}", auth: {} }
      when 'file' then { url: "file://#{tmpdir(prefix.delete('/'))}/store", auth: {} }
      when 'etcd'
        server = LibKVTest::Etcd.server(:plain)
        { url: server.url(prefix), auth: server.auth }
      when 'consul'
        if LibKVTest::Consul.real_url
          { url: LibKVTest::Consul.real_url + prefix, auth: LibKVTest::Consul.real_auth }
        else
          server = LibKVTest::Consul.server(:plain)
          { url: server.url(prefix), auth: server.auth }
        end
      when 'zookeeper' then { url: LibKVTest::ZooKeeper.server.url(prefix), auth: {} }
      when 'sqlite' then { url: "sqlite://#{tmpdir(prefix.delete('/'))}/store.db", auth: {} }
      else raise ArgumentError, "no store #{name}"
      end
    end

    def open(store, timeout: 5.0)
      LibKV.open(store[:url], store[:auth], timeout: timeout)
    end

    # Debian's puppetserver: its Ruby code (Puppet, Facter) and vendored gems,
    # which JRuby is given as puppetserver gives them (see rakelib/jruby.rake).
    PUPPETSERVER_RUBY = '/usr/lib/puppetserver/ruby/vendor_ruby'
    PUPPETSERVER_GEMS = '/usr/lib/puppetserver/vendored-jruby-gems'

    # The C ABI library JRuby loads through FFI: `cargo build --release -p
    # libkv-ffi` (rake stress builds it).
    def ffi_library
      File.join(TARGET, 'release', 'liblibkv_ffi.so')
    end

    # Why the JRuby workers cannot run here, or nil when they can.
    def jruby_missing
      return 'jruby is not installed' unless system('which jruby', out: File::NULL, err: File::NULL)
      return "#{ffi_library} is missing: build it with `cargo build --release -p libkv-ffi` (rake stress does)" \
        unless File.file?(ffi_library)

      nil
    end

    # The command line of a worker: MRI (this Ruby, the MRI extension) or JRuby
    # as puppetserver runs it (its Puppet and gems, the C ABI library through FFI).
    def worker_command(command, engine)
      case engine
      when :mri then [{}, RbConfig.ruby, WORKER, command]
      when :jruby
        env = { 'GEM_PATH' => PUPPETSERVER_GEMS, 'GEM_HOME' => nil, 'RUBYLIB' => nil, 'RUBYOPT' => nil,
                'LIBKV_FFI_LIBRARY' => ffi_library }
        [env, 'jruby', '-I', PUPPETSERVER_RUBY, WORKER, command]
      else raise ArgumentError, "no Ruby #{engine.inspect}"
      end
    end

    # Starts `ruby stress/worker.rb COMMAND` (under JRuby with engine: :jruby), with
    # +input+ (one line of JSON) on its stdin. Returns [pid, a thread whose value is
    # everything the worker printed]: read as it comes, so a worker never blocks
    # on a full pipe.
    def spawn_worker(command, input, err: :err, engine: :mri)
      reader, writer = IO.pipe
      in_r, in_w = IO.pipe
      pid = Process.spawn(*worker_command(command, engine), in: in_r, out: writer, err: err)
      [in_r, writer].each(&:close)
      output = Thread.new do
        text = reader.read
        reader.close
        text
      end
      in_w.puts(JSON.generate(input))
      in_w.close
      [pid, output]
    end

    # The stderr a worker wrote to the file +path+, as a failure message can show it.
    def tail_of(path, lines = 8)
      text = File.exist?(path) ? File.read(path) : ''
      text.strip.empty? ? '(nothing on its stderr)' : "its stderr ends: #{text.lines.last(lines).join.strip.inspect}"
    end

    # The JSON a worker printed last, or nil when it printed none.
    def result_of(output)
      line = output.value.lines.last
      line && JSON.parse(line)
    rescue JSON::ParserError
      nil
    end
  end

  # A worker that answers requests one at a time, each a line of JSON on its
  # stdin and its answer a line of JSON on its stdout; every wait for an answer
  # has a deadline, so a call that hangs in the worker fails the run instead of
  # hanging it.
  class Session
    attr_reader :pid, :stderr_path

    def initialize(command, input, engine: :mri)
      @stderr_path = File.join(Stress.tmpdir(command), 'stderr')
      in_r, @in = IO.pipe
      @out, out_w = IO.pipe
      @pid = Process.spawn(*Stress.worker_command(command, engine), in: in_r, out: out_w, err: @stderr_path)
      [in_r, out_w].each(&:close)
      @buffer = +''
      request(input)
    end

    def request(message)
      @in.puts(JSON.generate(message))
      @in.flush
      true
    rescue Errno::EPIPE, IOError
      false
    end

    # The worker's next answer, or nil when none came within +timeout+ seconds
    # (or the worker ended).
    def answer(timeout)
      deadline = Stress.monotonic + timeout
      until (line = @buffer.slice!(/\A[^\n]*\n/))
        left = deadline - Stress.monotonic
        return nil if left <= 0 || @out.closed? || !IO.select([@out], nil, nil, left)

        chunk = @out.read_nonblock(1 << 16, exception: false)
        return nil if chunk.nil?

        @buffer << chunk if chunk.is_a?(String)
      end
      JSON.parse(line)
    rescue JSON::ParserError
      nil
    end

    def stderr_tail
      Stress.tail_of(@stderr_path)
    end

    # Ends the worker: closes its stdin, waits at most +timeout+ seconds, then
    # kills it. Returns its Process::Status (nil when it was killed).
    def finish(timeout = 10)
      return @status if @finished

      @in.close unless @in.closed?
      @status = Stress.wait_all([@pid], timeout)[@pid]
      @out.close unless @out.closed?
      @finished = true
      @status
    end
  end
end
