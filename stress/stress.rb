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
  require_relative 'operations'

  # One run: what it tried (cases) and what it found (failures, each a message).
  class Run
    attr_reader :name, :cases, :failures, :seconds, :seed

    def initialize(name, seed)
      @name = name
      @seed = seed
      @cases = 0
      @failures = []
      @seconds = 0.0
    end

    # Counts one case; a false +ok+ records +message+ as a failure.
    def check(ok, message)
      @cases += 1
      fail!(message) unless ok
      ok
    end

    # Counts +n+ cases at once, of which the +failed+ messages are failures.
    def tally(count, failed)
      @cases += count
      failed.each { |m| fail!(m) }
    end

    def fail!(message)
      @failures << message
      say("FAILED: #{message}")
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

    def monotonic
      Process.clock_gettime(Process::CLOCK_MONOTONIC)
    end

    def scratch
      @scratch ||= Dir.mktmpdir('libkv-stress').tap { |dir| at_exit { FileUtils.rm_rf(dir) } }
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
      else raise ArgumentError, "no store #{name}"
      end
    end

    def open(store, timeout: 5.0)
      LibKV.open(store[:url], store[:auth], timeout: timeout)
    end

    # Starts `ruby stress/worker.rb COMMAND`, with +input+ (JSON) on its stdin.
    # Returns [pid, a thread whose value is everything the worker printed]: read
    # as it comes, so a worker never blocks on a full pipe.
    def spawn_worker(command, input, err: :err)
      reader, writer = IO.pipe
      in_r, in_w = IO.pipe
      pid = Process.spawn(RbConfig.ruby, WORKER, command, in: in_r, out: writer, err: err)
      [in_r, writer].each(&:close)
      output = Thread.new do
        text = reader.read
        reader.close
        text
      end
      in_w.write(JSON.generate(input))
      in_w.close
      [pid, output]
    end

    # The JSON a worker printed last, or nil when it printed none.
    def result_of(output)
      line = output.value.lines.last
      line && JSON.parse(line)
    rescue JSON::ParserError
      nil
    end

    # Waits for +pids+ at most +timeout+ seconds, then kills what is left.
    # Returns pid => Process::Status (nil for the ones killed at the deadline).
    def wait_all(pids, timeout)
      deadline = monotonic + timeout
      statuses = {}
      until (pids - statuses.keys).empty? || monotonic > deadline
        (pids - statuses.keys).each do |pid|
          done, status = Process.wait2(pid, Process::WNOHANG)
          statuses[done] = status if done
        end
        sleep 0.01
      end
      (pids - statuses.keys).each do |pid|
        Process.kill('KILL', pid)
        Process.wait(pid)
        statuses[pid] = nil
      end
      statuses
    end
  end
end
