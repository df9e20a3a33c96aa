# frozen_string_literal: true

require 'socket'

# etcd, then the Consul test double (and ZooKeeper, once its store is available),
# stopped and then frozen (SIGSTOP: it accepts
# connections but never answers) while two processes call every function at once,
# one through the Ruby API and one as Puppet functions with and without softfail.
# Each call ends within the timeout + 1 s with a clear error, or with softfail the
# safe value; once the server is back, the same store object works again.
module Stress
  # Starts, stops, freezes and thaws one server on a fixed port.
  class Outage
    TIMEOUT = 1.0
    SAFE = {
      'get' => nil, 'put' => false, 'delete' => false, 'exists' => false, 'list' => {},
      'deletetree' => false, 'atomic_create' => false, 'atomic_get' => { 'value' => nil, 'sequence' => 0 },
      'atomic_put' => false, 'atomic_delete' => false, 'atomic_list' => {}, 'info' => {}
    }.freeze

    def initialize(run, name)
      @run = run
      @name = name
    end

    # etcd's own process, ZooKeeper's, or the Consul double's.
    def start
      if @name == 'etcd'
        @etcd = LibKVTest::Etcd.private_server(:plain)
        @url = @etcd.url('/outage')
      elsif @name == 'zookeeper'
        @zookeeper = LibKVTest::ZooKeeper.private_server
        @url = @zookeeper.url('/outage')
      else
        @port = LibKVTest::Etcd.free_port
        consul_up
        @url = "consul://127.0.0.1:#{@port}/outage"
      end
      self
    end

    attr_reader :url

    def pid
      (@etcd || @zookeeper || @consul).pid
    end

    def stop
      if @etcd then LibKVTest::Etcd.stop(@etcd)
      elsif @zookeeper then LibKVTest::ZooKeeper.stop(@zookeeper)
      else @consul.close
      end
    end

    def restart
      if @etcd then LibKVTest::Etcd.restart(@etcd)
      elsif @zookeeper then LibKVTest::ZooKeeper.restart(@zookeeper)
      else consul_up
      end
    end

    # SIGSTOP is delivered to each of the server's threads on its way back to user
    # space: a thread busy on the other core can still answer one request after
    # kill returns. Wait until /proc shows every thread stopped (state T).
    def suspend
      Process.kill('STOP', pid)
      deadline = Stress.monotonic + 10
      until all_stopped?
        raise "#{@name} (pid #{pid}) did not stop within 10 s of SIGSTOP" if Stress.monotonic > deadline

        sleep 0.01
      end
    end

    def resume
      Process.kill('CONT', pid)
    end

    def all_stopped?
      Dir.glob("/proc/#{pid}/task/*/stat").all? do |stat|
        # The state follows the command name, which is in parentheses.
        File.read(stat)[/\) (\S)/, 1] == 'T'
      rescue Errno::ENOENT, Errno::ESRCH
        true # a thread that ended meanwhile
      end
    end

    def consul_up
      @consul = IO.popen([LibKVTest::Consul.binary, '--port', @port.to_s], 'r+')
      line = @consul.gets.to_s
      raise "consul-double did not start: #{line.inspect}" unless line.start_with?('listening on')
    end

    # A worker process that opens the store and puts '/before' while the server
    # is up, then calls the Ruby API on that same store object when asked (see
    # outage_api in worker.rb). Each of its answers has a deadline.
    def api_worker
      session = Session.new('outage-api', { url: url, auth: {}, timeout: TIMEOUT })
      ready = session.answer(60)
      return session if ready && ready['ready']

      @run.fail!("#{@name}: the Ruby API process did not open the store: #{ready.inspect}; #{session.stderr_tail}")
      session.finish(5)
      nil
    end

    # Every Ruby API operation on the worker's store fails within the timeout + 1 s
    # with a ConnectionError that names the store and says what happened. A call
    # that does not answer within the timeout + 5 s fails the run, and the worker
    # is stopped. Returns the slowest call's time.
    def ruby_api(session, state)
      unless session&.request('op' => 'calls')
        @run.fail!("#{@name} #{state}: no Ruby API process (it failed before)")
        return nil
      end

      slowest = 0.0
      Stress.every_operation.each do |op, _|
        what = "#{@name} #{state}: Ruby API #{op}"
        outcome = session.answer(TIMEOUT + 5)
        unless outcome
          @run.fail!("#{what} did not return within the timeout + 5 s (hung?); #{session.stderr_tail}")
          session.finish(1)
          return nil
        end
        took = outcome['seconds']
        slowest = [slowest, took].max
        @run.check(outcome['op'] == op, "#{what}: the answer was about #{outcome['op'].inspect}")
        @run.check(took <= TIMEOUT + 1, format('%s took %.2f s, more than the timeout + 1 s', what, took))
        clear = outcome['connection'] && outcome['message'].include?(url) &&
                outcome['message'].match?(/cannot reach the store|timed out after/)
        @run.check(clear, "#{what} should fail with a ConnectionError naming #{url}: #{outcome.inspect}")
      end
      done = session.answer(TIMEOUT + 5)
      @run.check(done && done['done'], "#{@name} #{state}: the Ruby API process did not end its calls: #{done.inspect}")
      slowest
    end

    # Every libkv:: function in a Puppet compilation: with softfail each returns its
    # safe value and pop_error tells why; without, each raises a Puppet error.
    #
    # puppet_start starts the Puppet process, which makes its calls while the
    # Ruby API ones are made; puppet_check waits for it and checks its results.
    def puppet_start(state)
      options = { 'url' => url, 'timeout' => TIMEOUT }
      args = { 'get' => ['/k'], 'put' => ['/k', 'v'], 'delete' => ['/k'], 'exists' => ['/k'], 'list' => ['/'],
               'deletetree' => ['/d'], 'atomic_create' => ['/k', 'v'], 'atomic_get' => ['/k'],
               'atomic_put' => ['/k', 'v', { 'value' => 'old', 'sequence' => 1 }],
               'atomic_delete' => ['/k', { 'value' => 'old', 'sequence' => 1 }], 'atomic_list' => ['/'], 'info' => [] }
      calls = SAFE.keys.flat_map do |f|
        [[f, *args[f], options.merge('softfail' => true)], ['pop_error'], [f, *args[f], options]]
      end
      [state, calls, *Stress.spawn_worker('puppet', { dir: Stress.tmpdir('outage-puppet'), calls: calls })]
    end

    def puppet_check(started)
      state, calls, pid, out = started
      status = Stress.wait_all([pid], 180)[pid]
      result = Stress.result_of(out)
      return @run.fail!("#{@name} #{state}: the Puppet process failed: #{status.inspect}") unless status&.success? && result

      results = result['results']
      return @run.fail!("#{@name} #{state}: #{results.size} results for #{calls.size} calls") unless results.size == calls.size

      warnings = result['logs'].select { |l| l.start_with?('warning: libkv::') }
      slowest = 0.0
      results.each_slice(3).zip(SAFE.to_a) do |(soft, popped, hard), (f, safe)|
        what = "#{@name} #{state}: libkv::#{f}"
        @run.check([soft, popped, hard].map { |r| r['function'] } == [f, 'pop_error', f],
                   "#{what}: the results are out of order: #{[soft, popped, hard].inspect[0, 300]}")
        slowest = [slowest, soft['seconds'], hard['seconds']].max
        @run.check(soft['seconds'] <= TIMEOUT + 1 && hard['seconds'] <= TIMEOUT + 1,
                   format('%s took %.2f s and %.2f s, more than the timeout + 1 s', what, soft['seconds'], hard['seconds']))
        @run.check(!soft.key?('error') && soft['result'] == safe,
                   "#{what} with softfail should return #{safe.inspect}: #{soft.inspect}")
        @run.check(popped['result'].to_s.start_with?("libkv::#{f}") && popped['result'].include?(url),
                   "#{what}: pop_error should tell what failed: #{popped.inspect}")
        @run.check(warnings.any? { |l| l.start_with?("warning: #{popped['result']} (softfail: returning ") },
                   "#{what} with softfail should log a warning telling what failed; warnings: #{warnings.inspect[0, 300]}")
        @run.check(hard['error'].to_s.match?(/\APuppet::Error: libkv::#{f}.*#{Regexp.escape(url)}/),
                   "#{what} without softfail should raise a Puppet::Error naming the store: #{hard.inspect}")
      end
      @run.check(warnings.size == SAFE.size, "#{@name} #{state}: #{warnings.size} warnings for #{SAFE.size} soft failures")
      slowest
    end

    # The store object made before the outage works again.
    def recovered(session, state, kept)
      unless session&.request('op' => 'recovered', 'state' => state)
        return @run.fail!("#{@name} after #{state}: no Ruby API process (it failed before)")
      end

      outcome = session.answer(TIMEOUT + 10)
      @run.check(outcome && outcome['values'] == [state, kept],
                 "#{@name} after #{state}: the store object should work again: #{outcome.inspect}")
    end
  end
end

Stress.define('outage', 'etcd and the Consul test double stopped, then frozen, while every function is called') do |run, _random|
  %w[etcd consul].each do |name|
    if name == 'consul' && LibKVTest::Consul.real_url
      run.skip!('consul', 'LIBKV_TEST_CONSUL_URL names a real Consul, which this run cannot stop')
      next
    end
    server = Stress::Outage.new(run, name).start
    session = server.api_worker

    server.stop
    started = server.puppet_start('stopped')
    ruby = server.ruby_api(session, 'stopped')
    puppet = server.puppet_check(started)
    run.say(format('%-6s stopped: 12 Ruby API calls, slowest %.2f s; 12 functions with and without softfail ' \
                   'in Puppet, slowest %.2f s (timeout %.1f s)', name, ruby.to_f, puppet.to_f, Stress::Outage::TIMEOUT))
    server.restart
    # The Consul double keeps its data in memory only: it comes back empty.
    kept = name == 'consul' ? nil : 'kept'
    server.recovered(session, 'restart', kept)

    server.suspend
    begin
      started = server.puppet_start('frozen')
      ruby = server.ruby_api(session, 'frozen')
      puppet = server.puppet_check(started)
    ensure
      server.resume
    end
    run.say(format('%-6s frozen:  12 Ruby API calls, slowest %.2f s; 12 functions with and without softfail ' \
                   'in Puppet, slowest %.2f s', name, ruby.to_f, puppet.to_f))
    server.recovered(session, 'thaw', kept)
    status = session&.finish(10)
    run.check(session.nil? || status&.success?, "#{name}: the Ruby API process did not end cleanly: #{status.inspect}")
    server.stop
  end
end
