# frozen_string_literal: true

require 'spec_helper'

# Keys that expire (the ttl option of put, atomic_create and atomic_put) and locks
# (newlock, lock, unlock, LibKV::Lock), written against the Ruby API only: every
# store registered in spec/support/backends.rb runs them, under MRI (the
# extension) and JRuby (the C ABI library through FFI) alike. The examples that
# wait for a ttl to pass run on the first backend of each provider only.
RSpec.describe 'LibKV ttl and locks' do
  # The shortest ttl of each provider, which its stores tell only in the message
  # that refuses a shorter one.
  shortest_ttl = { 'mock' => 1, 'file' => 1, 'legacy-simp6' => 1, 'etcd' => 2, 'consul' => 1, 'zookeeper' => 1, 'sqlite' => 1 }.freeze
  # Whether the stores of +backend+ have locks (and keys that expire), as one of
  # them says in `supports`: its broken store, or a fresh one when it has none
  # (mock), for opening a store connects to nothing. An example below checks
  # that the example's own store says the same.
  has_locks = lambda do |backend|
    Dir.mktmpdir('libkv-spec') do |dir|
      options = (backend.broken || backend.fresh).call(dir)
      vardir = options[:vardir] || File.join(dir, 'vardir')
      probe = LibKV.open(options[:url], options[:auth], vardir: vardir, environment: 'production')
      probe.supports.include?('newlock').tap { probe.close }
    end
  end
  # The backends that run the examples that wait.
  waiting = LibKVTest.backends.group_by(&:provider).map { |_, list| list.first.name }.freeze

  def monotonic
    Process.clock_gettime(Process::CLOCK_MONOTONIC)
  end

  # Polls until the block is true, at most +timeout+ seconds; its last answer.
  def eventually(timeout)
    deadline = monotonic + timeout
    loop do
      answer = yield
      return answer if answer || monotonic > deadline

      sleep 0.1
    end
  end

  # JRuby's GC.start does nothing: the JVM's collector, then its finalizers.
  def collect_garbage
    if defined?(JRUBY_VERSION)
      require 'java'
      java.lang.System.gc
      java.lang.System.runFinalization
    else
      GC.start
    end
  end

  LibKVTest.each_backend(self) do |b|
    let(:store) { open_store }
    let(:shortest) { shortest_ttl.fetch(b.provider) }
    # The longest: Consul's session bound, else ten years.
    let(:longest) { b.provider == 'consul' ? 86_400 : 10 * 365 * 24 * 3600 }

    locks = has_locks.call(b)

    it "#{locks ? 'supports' : 'lacks'} newlock, unlock and with_lock, all three" do
      expect(store.supports & %w[newlock unlock with_lock]).to eq(locks ? %w[newlock unlock with_lock] : [])
    end

    unless locks
      describe 'without locks' do
        it 'refuses newlock, lock and unlock, naming the operation and the provider' do
          [['newlock', -> { store.newlock('/l', timeout: 0) }],
           ['newlock', -> { store.lock('/l', timeout: 0) { raise 'the block ran' } }],
           ['unlock', -> { store.unlock('/l', 'owner') }]].each do |op, call|
            expect(&call).to raise_error(LibKV::UnsupportedError) { |e|
              expect(e.message).to eq("#{op} is not supported by the #{b.provider} store")
            }
          end
          expect(store.exists('/l')).to be(false)
        end

        it 'refuses a ttl, naming it and the provider, and writes nothing' do
          calls = [-> { store.put('/t', 'v', ttl: 60) },
                   -> { store.atomic_create('/t', 'v', ttl: 60) },
                   -> { store.atomic_put('/t', 'v', store.empty_value, ttl: 60) }]
          calls.each do |call|
            expect(&call).to raise_error(LibKV::UnsupportedError) { |e|
              expect(e.message).to include('ttl').and include(b.provider)
            }
          end
          expect(store.exists('/t')).to be(false)
        end
      end
      next
    end

    describe 'ttl' do
      it 'is taken by put, atomic_create and atomic_put; the value is readable right after' do
        expect(store.put('/ttl/put', { 'a' => [1, 2] }, ttl: 60)).to be(true)
        expect(store.get('/ttl/put')).to eq('a' => [1, 2])
        expect(store.put('/ttl/raw', "\x00raw".b, serialize: false, ttl: 60)).to be(true)
        expect(store.get('/ttl/raw', serialize: false)).to eq("\x00raw".b)
        expect(store.atomic_create('/ttl/c', 'first', ttl: 60)).to be(true)
        expect(store.atomic_create('/ttl/c', 'second', ttl: 60)).to be(false)
        expect(store.get('/ttl/c')).to eq('first')
        current = store.atomic_get('/ttl/c')
        expect(store.atomic_put('/ttl/c', 'third', current, ttl: 60)).to be(true)
        expect(store.atomic_put('/ttl/c', 'stale', current, ttl: 60)).to be(false)
        expect(store.atomic_put('/ttl/new', 1, store.empty_value, ttl: 60)).to be(true)
        expect(store.get('/ttl/c')).to eq('third')
        expect(store.list('/ttl').keys).to contain_exactly('put', 'raw', 'c', 'new')
        expect(store.atomic_get('/ttl/new')).to include('value' => 1)
      end

      it 'refuses a bad ttl before any write' do
        writes = {
          'put' => ->(ttl) { store.put('/bad', 'v', ttl: ttl) },
          'atomic_create' => ->(ttl) { store.atomic_create('/bad', 'v', ttl: ttl) },
          'atomic_put' => ->(ttl) { store.atomic_put('/bad', 'v', store.empty_value, ttl: ttl) }
        }
        writes.each do |op, write|
          [0, -1, shortest - 1, longest + 1].each do |ttl|
            expect { write.call(ttl) }.to raise_error(LibKV::InvalidArgumentError) { |e|
              expect(e.message).to eq("ttl must be a whole number of seconds from #{shortest} to #{longest} " \
                                      "on the #{b.provider} store, not #{ttl}"), "#{op} ttl #{ttl}"
            }
          end
          [1.5, '60', true, [60]].each do |ttl|
            expect { write.call(ttl) }.to raise_error(TypeError, /ttl must be a whole number of seconds/),
                                          "#{op} ttl #{ttl.inspect}"
          end
          expect { write.call(2**64) }.to raise_error(RangeError)
        end
        expect(store.exists('/bad')).to be(false)
        expect(store.list('/')).to be_empty
      end

      it 'is an unknown keyword of the operations that do not take one' do
        [-> { store.get('/k', ttl: 60) }, -> { store.list('/', ttl: 60) },
         -> { store.atomic_get('/k', ttl: 60) }, -> { store.atomic_list('/', ttl: 60) }].each do |call|
          expect(&call).to raise_error(ArgumentError, /unknown keyword: :?ttl/)
        end
        # Those without keywords take none.
        [-> { store.delete('/k', ttl: 60) }, -> { store.exists('/k', ttl: 60) },
         -> { store.deletetree('/d', ttl: 60) }, -> { store.atomic_delete('/k', store.empty_value, ttl: 60) },
         -> { store.unlock('/k', 'owner', ttl: 60) }].each do |call|
          expect(&call).to raise_error(ArgumentError, /wrong number of arguments/)
        end
        expect(store.exists('/k')).to be(false)
      end

      if waiting.include?(b.name)
        it "lets a key expire after the store's shortest ttl, for every read alike" do
          expect(store.put('/exp/put', 'v', ttl: shortest)).to be(true)
          expect(store.atomic_create('/exp/created', 'v', ttl: shortest)).to be(true)
          store.put('/exp/replaced', 'old')
          expect(store.atomic_put('/exp/replaced', 'v', store.atomic_get('/exp/replaced'), ttl: shortest)).to be(true)
          store.put('/exp/kept', 'k')
          store.put('/exp/long', 'l', ttl: 600)
          expired = %w[put created replaced]
          sleep shortest
          gone = eventually(shortest + 5) { expired.none? { |k| store.exists("/exp/#{k}") } }
          expect(gone).to be(true), "still there #{2 * shortest + 5}s after a ttl of #{shortest}s"
          expired.each do |k|
            key = "/exp/#{k}"
            expect(store.get(key)).to be_nil, key
            expect(store.exists(key)).to be(false), key
            expect(store.atomic_get(key)).to eq(store.empty_value), key
          end
          expect(store.list('/exp')).to eq('kept' => 'k', 'long' => 'l')
          expect(store.atomic_list('/exp').keys).to contain_exactly('kept', 'long')
          expect(store.atomic_create('/exp/put', 'again')).to be(true)
        end
      end
    end

    describe 'locks' do
      it 'newlock returns a held LibKV::Lock, whose key holds its owner' do
        lock = store.newlock('/locks/a', ttl: 30, timeout: 5)
        expect(lock).to be_an_instance_of(LibKV::Lock)
        expect(lock.held?).to be(true)
        expect(lock.lost).to be_nil
        expect(lock.key).to eq('/locks/a')
        expect(lock.owner).to be_a(String).and match(/\S/)
        expect(lock.fence).to be_an(Integer).and be_positive
        expect(lock.ttl).to eq(30)
        expect(lock.to_h).to eq('key' => '/locks/a', 'owner' => lock.owner, 'fence' => lock.fence, 'ttl' => 30)
        expect(lock.inspect).to eq("#<LibKV::Lock /locks/a fence=#{lock.fence} held>")
        expect(store.get('/locks/a')).to eq(lock.owner)
        expect(lock.unlock).to be(true)
        expect(lock.inspect).to eq("#<LibKV::Lock /locks/a fence=#{lock.fence} not held>")
      end

      it 'comes only from a store' do
        expect { LibKV::Lock.new }.to raise_error(TypeError, 'allocator undefined for LibKV::Lock')
        expect { LibKV::Lock.allocate }.to raise_error(TypeError)
      end

      it 'refuses a second newlock of the key within its timeout, naming the key' do
        lock = store.newlock('/locks/b', ttl: 30)
        started = monotonic
        expect { store.newlock('/locks/b', timeout: 0.2) }.to raise_error(LibKV::LockTimeoutError) { |e|
          expect(e.message).to include('/locks/b')
          expect(e.key).to eq('/locks/b')
        }
        expect(monotonic - started).to be_between(0.2, 3)
        expect { store.newlock('/locks/b', timeout: 0) }.to raise_error(LibKV::LockTimeoutError)
        expect(lock.held?).to be(true)
        lock.unlock
      end

      it 'is released by unlock (twice is harmless): taken again with a larger fence' do
        first = store.newlock('/locks/c', ttl: 30)
        expect(first.unlock).to be(true)
        expect(first.held?).to be(false)
        expect(first.lost).to be_nil
        expect(first.unlock).to be(true)
        expect(store.exists('/locks/c')).to be(false)
        second = store.newlock('/locks/c', ttl: 30, timeout: 0)
        expect(second.held?).to be(true)
        expect(second.fence).to be > first.fence
        second.unlock
      end

      it 'is released by store.unlock with the owner to_h tells, once' do
        lock = store.newlock('/locks/d', ttl: 30)
        told = lock.to_h
        expect(store.unlock(told['key'], told['owner'])).to be(true)
        expect(store.unlock(told['key'], told['owner'])).to be(false)
        other = store.newlock('/locks/d', ttl: 30, timeout: 0)
        expect(store.unlock('/locks/d', told['owner'])).to be(false)
        expect(other.held?).to be(true)
        # The first holder finds it no longer its own when it releases it.
        expect { lock.unlock }.to raise_error(LibKV::LockLostError) { |e| expect(e.key).to eq('/locks/d') }
        expect(other.unlock).to be(true)
      end

      it 'runs the block of store.lock holding it, returns its value and releases it' do
        result = store.lock('/locks/e', ttl: 30, timeout: 5) do |lock|
          expect(lock).to be_an_instance_of(LibKV::Lock)
          expect(lock.held?).to be(true)
          expect(store.get('/locks/e')).to eq(lock.owner)
          expect { store.newlock('/locks/e', timeout: 0) }.to raise_error(LibKV::LockTimeoutError)
          [:the, 'result']
        end
        expect(result).to eq([:the, 'result'])
        expect(store.exists('/locks/e')).to be(false)
        store.newlock('/locks/e', timeout: 0).unlock
      end

      it 'releases the lock of store.lock when the block raises, which propagates' do
        inside = nil
        expect {
          store.lock('/locks/f', ttl: 30) do |lock|
            inside = lock
            raise KeyError, 'from the block'
          end
        }.to raise_error(KeyError, 'from the block')
        expect(inside.held?).to be(false)
        expect(store.exists('/locks/f')).to be(false)
        store.newlock('/locks/f', timeout: 0).unlock
      end

      it 'is left on the store by detach' do
        lock = store.newlock('/locks/g', ttl: 30)
        expect(lock.detach).to be(true)
        expect(lock.held?).to be(false)
        expect(lock.unlock).to be(true)
        expect { store.newlock('/locks/g', timeout: 0) }.to raise_error(LibKV::LockTimeoutError)
        expect(store.unlock('/locks/g', lock.owner)).to be(true)
      end

      it 'refuses bad arguments before taking anything' do
        expect { store.newlock('bad') }.to raise_error(LibKV::InvalidKeyError)
        expect { store.newlock('/l', ttl: 0) }.to raise_error(LibKV::InvalidArgumentError, /ttl must be/)
        expect { store.newlock('/l', ttl: shortest - 1) }.to raise_error(LibKV::InvalidArgumentError)
        expect { store.newlock('/l', ttl: 1.5) }.to raise_error(TypeError)
        expect { store.newlock('/l', ttl: nil) }.to raise_error(TypeError)
        expect { store.newlock('/l', ttl: 2**64) }.to raise_error(RangeError)
        expect { store.newlock('/l', timeout: -1) }.to raise_error(LibKV::InvalidArgumentError, /timeout/)
        expect { store.newlock('/l', timeout: '5') }.to raise_error(TypeError)
        expect { store.newlock('/l', renew: 'yes') }.to raise_error(TypeError)
        expect { store.unlock('/l', :owner) }.to raise_error(TypeError)
        expect { store.lock('/l') }.to raise_error(ArgumentError, /needs a block/)
        expect(store.exists('/l')).to be(false)
      end

      if waiting.include?(b.name)
        it 'is lost once its ttl passes without renewal (renew: false)' do
          lock = store.newlock('/locks/h', ttl: shortest, renew: false)
          expect(lock.held?).to be(true)
          sleep shortest + 0.2
          expect(lock.held?).to be(false)
          expect(lock.lost).to be_a(String).and match(/\S/)
          expect { lock.unlock }.to raise_error(LibKV::LockLostError) { |e|
            expect(e.key).to eq('/locks/h')
            expect(e.message).to include('/locks/h')
          }
          expect(lock.unlock).to be(true)
          store.newlock('/locks/h', timeout: 2 * shortest + 5).unlock
        end

        it 'is released once garbage, its store working on' do
          locks = Array.new(20) { |i| store.newlock("/gc/#{i}", ttl: 60) }
          expect(store.list('/gc').size).to eq(20)
          locks.clear
          # A finalizer (JRuby) or the collector (MRI) frees them; the library
          # releases each on a thread of its own.
          released = eventually(30) do
            collect_garbage
            store.list('/gc').empty?
          end
          expect(released).to be(true), "#{store.list('/gc').size} of 20 garbage locks still held after 30s"
          expect(store.put('/after', 1)).to be(true)
          store.newlock('/gc/0', timeout: 0).unlock
        end

        it 'is kept while renewed, past its ttl' do
          lock = store.newlock('/locks/i', ttl: shortest)
          sleep shortest * 2 + 0.5
          expect(lock.held?).to be(true)
          expect(lock.lost).to be_nil
          expect(store.get('/locks/i')).to eq(lock.owner)
          expect(lock.unlock).to be(true)
        end
      end
    end
  end
end
