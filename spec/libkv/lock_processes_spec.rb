# frozen_string_literal: true

require 'spec_helper'

# Locks between OS processes, each with its own store object, as Puppet
# compilations on several servers hold them: mutual exclusion, a holder killed,
# a holder frozen past its ttl. On one store setup per provider whose stores
# outlive a process (the mock store lives in one process's memory).
RSpec.describe 'locks between processes', fork: true do
  # The shortest ttl each provider keeps, and how long after it the store may
  # still hold a lock whose holder stopped renewing (etcd expires leases in
  # rounds; Consul invalidates a session between ttl and twice ttl).
  ttls = { 'file' => [1, 0.5], 'legacy-simp6' => [1, 0.5], 'etcd' => [2, 1.5], 'consul' => [1, 1.2],
           'zookeeper' => [1, 0.5], 'sqlite' => [1, 0.5] }.freeze
  shared = LibKVTest.backends.reject { |b| b.provider == 'mock' }.group_by(&:provider).values.map(&:first)

  def monotonic
    Process.clock_gettime(Process::CLOCK_MONOTONIC)
  end

  def open_store
    LibKV.open(store_options[:url], store_options[:auth], vardir: store_options[:vardir], environment: 'production')
  end

  # Runs the block in a child process with a store of its own; the child exits 0
  # when the block returns, or the Integer the block returns, and 1 when it raises.
  def child
    store_options # the parent's store, worked out before the fork
    Process.fork do
      code = 0
      begin
        result = yield open_store
        code = result if result.is_a?(Integer)
      rescue Exception => e # rubocop:disable Lint/RescueException
        warn "child #{Process.pid}: #{e.class}: #{e.message}\n  #{Array(e.backtrace).first(5).join("\n  ")}"
        code = 1
      end
      $stdout.flush
      $stderr.flush
      exit!(code)
    end
  end

  # Waits for the children, killing those still running after +limit+ seconds.
  def reap(pids, limit)
    deadline = monotonic + limit
    pids.to_h do |pid|
      status = nil
      until (status = Process.wait2(pid, Process::WNOHANG)&.last)
        if monotonic > deadline
          Process.kill('KILL', pid)
          status = Process.wait2(pid).last
          break
        end
        sleep 0.05
      end
      [pid, status]
    end
  end

  shared.each do |b|
    context "on the #{b.name} store", store: b.name do
      let(:backend) { b }
      let(:ttl) { ttls.fetch(b.provider).first }
      let(:slack) { ttls.fetch(b.provider).last }

      include LibKVTest::BackendContext

      it '8 processes x 50 sections under one lock: the counter is exact and no two sections overlap' do
        store = open_store
        store.put('/counter', 0)
        log = File.join(tmp, 'sections')
        pids = Array.new(8) do |n|
          child do |own|
            File.open("#{log}.#{n}", 'w') do |out|
              50.times do
                own.lock('/locks/counter', ttl: [ttl, 30].max, timeout: 120) do |lock|
                  started = monotonic
                  count = own.get('/counter')
                  sleep 0.002
                  own.put('/counter', count + 1)
                  out.puts [started, monotonic, lock.fence].join(' ')
                end
              end
            end
            nil
          end
        end
        statuses = reap(pids, 300)
        expect(statuses.values.map(&:exitstatus)).to eq([0] * 8)
        expect(store.get('/counter')).to eq(400)
        sections = Array.new(8) { |n| File.readlines("#{log}.#{n}").map { |l| l.split.map(&:to_f) } }.flatten(1)
        expect(sections.size).to eq(400)
        sections.sort_by!(&:first)
        overlaps = sections.each_cons(2).select { |(_, ended, _), (started, _, _)| started < ended }
        expect(overlaps).to be_empty, "#{overlaps.size} overlapping sections, first: #{overlaps.first.inspect}"
        fences = sections.map(&:last)
        expect(fences).to eq(fences.sort), 'fences grow with every acquisition'
        expect(fences.uniq.size).to eq(400)
      end

      it 'a holder killed with SIGKILL keeps the lock until its ttl has passed, then another takes it' do
        r, w = IO.pipe
        pid = child do |own|
          r.close
          lock = own.newlock('/locks/kill', ttl: ttl)
          w.puts lock.fence
          w.close
          sleep 600
        end
        w.close
        fence = Integer(r.gets)
        store = open_store
        expect { store.newlock('/locks/kill', ttl: ttl, timeout: 0) }.to raise_error(LibKV::LockTimeoutError)
        Process.kill('KILL', pid)
        killed = monotonic
        reap([pid], 10)
        lock = store.newlock('/locks/kill', ttl: ttl, timeout: ttl * 3 + slack)
        waited = monotonic - killed
        # Renewed every third of the ttl until killed: free no sooner than two
        # thirds of it after, and no later than all of it (plus the store's slack).
        expect(waited).to be >= ttl * 2 / 3.0 - 0.1
        expect(waited).to be <= ttl + slack + 0.5
        expect(lock.fence).to be > fence
        lock.unlock
      end

      it 'a holder frozen with SIGSTOP past its ttl loses the lock, and is told so when it resumes' do
        r, w = IO.pipe
        go = File.join(tmp, 'go')
        pid = child do |own|
          r.close
          owner = nil
          begin
            own.lock('/locks/frozen', ttl: ttl) do |lock|
              owner = lock.owner
              w.puts lock.fence
              w.flush
              sleep 0.01 until File.exist?(go)
              raise 'still held after being frozen past the ttl' if lock.held?
            end
            2
          rescue LibKV::LockLostError
            # The lock is the new holder's: this one's owner releases nothing.
            own.unlock('/locks/frozen', owner) ? 4 : 3
          end
        end
        w.close
        fence = Integer(r.gets)
        Process.kill('STOP', pid)
        stopped = monotonic
        store = open_store
        lock = store.newlock('/locks/frozen', ttl: 60, timeout: ttl * 3 + slack)
        expect(monotonic - stopped).to be >= ttl * 2 / 3.0 - 0.1
        expect(lock.fence).to be > fence
        Process.kill('CONT', pid)
        File.write(go, '')
        status = reap([pid], 30).fetch(pid)
        expect(status.exitstatus).to eq(3), 'the frozen holder must learn it lost the lock, and release nothing'
        expect(lock.held?).to be(true)
        expect(store.get('/locks/frozen')).to eq(lock.owner)
        lock.unlock
      end
    end
  end

  context 'on a private etcd' do
    it 'a lock wait fails within its timeout when etcd stops meanwhile' do
      server = LibKVTest::Etcd.private_server(:plain)
      url = server.url('/locks-outage')
      holder = LibKV.open(url, {}, timeout: 1)
      held = holder.newlock('/locks/outage', ttl: 30)
      waiter = LibKV.open(url, {}, timeout: 1)
      started = monotonic
      thread = Thread.new do
        waiter.newlock('/locks/outage', ttl: 30, timeout: 3)
      rescue LibKV::Error => e
        e
      end
      sleep 0.5
      LibKVTest::Etcd.stop(server)
      error = thread.value
      expect(monotonic - started).to be < 3 + 1 + 0.5
      expect(error).to be_a(LibKV::LockTimeoutError).or be_a(LibKV::ConnectionError)
      expect(error.message).to include('/locks/outage')
      held.detach
    end
  end
end
