# frozen_string_literal: true

require 'spec_helper'

# What only the file stores (file:// and legacy-simp6://) do: their on-disk layout,
# which SIMP 6's simp_autofiles share, and what they refuse on disk.
RSpec.describe 'the file stores' do
  file_stores = LibKVTest.backends.select { |b| %w[file legacy-simp6].include?(b.name) }

  file_stores.each do |b|
    context "on the #{b.name} store", store: b.name do
      let(:backend) { b }
      include LibKVTest::BackendContext

      subject(:store) { open_store }

      # The store's root directory, worked out from the options, not asked of the store.
      let(:root) do
        if b.name == 'legacy-simp6'
          File.join(store_options[:vardir], 'simp', 'environments', 'production', 'simp_autofiles')
        else
          store_options[:url].delete_prefix('file://')
        end
      end

      let(:outside) do
        dir = File.join(tmp, 'outside')
        FileUtils.mkdir_p(dir)
        File.write(File.join(dir, 'secret'), 'outside the store')
        dir
      end

      def path(key)
        File.join(root, key)
      end

      # Writes a file into the store as another tool (or SIMP 6) would.
      def plant(key, bytes)
        FileUtils.mkdir_p(File.dirname(path(key)))
        File.binwrite(path(key), bytes)
      end

      it 'reports its root in info' do
        expect(store.info['root']).to eq(root)
        expect(store.info['provider']).to eq(b.name)
      end

      it 'keeps the key /a/b as the file ROOT/a/b holding the plain bytes of a String' do
        store.put('/a/b', "naïve ✓\n")
        expect(File.file?(path('/a/b'))).to be(true)
        expect(File.binread(path('/a/b'))).to eq("naïve ✓\n".b)
        store.put('/bin', "\xff\x00\xfe".b)
        expect(File.binread(path('/bin'))).to eq("\xff\x00\xfe".b)
        store.put('/raw', 'raw text', serialize: false)
        expect(File.binread(path('/raw'))).to eq('raw text')
      end

      it 'stores every other type in the envelope {"libkv":1,"value":...}' do
        {
          42 => '{"libkv":1,"value":42}',
          nil => '{"libkv":1,"value":null}',
          true => '{"libkv":1,"value":true}',
          1.0 => '{"libkv":1,"value":1.0}',
          { 'z' => 1, 'a' => [nil] } => '{"libkv":1,"value":{"z":1,"a":[null]}}',
          'abc'.b => '{"libkv":1,"value":{"__ptype":"Binary","__pvalue":"YWJj"}}',
          { 1 => 'x' } => '{"libkv":1,"value":{"__ptype":"Hash","__pvalue":[1,"x"]}}',
          '{"libkv":1,"value":42}' => '{"libkv":1,"value":"{\"libkv\":1,\"value\":42}"}'
        }.each do |value, text|
          store.put('/enveloped', value)
          expect(File.binread(path('/enveloped'))).to eq(text), "#{value.inspect} is stored as #{File.binread(path('/enveloped')).inspect}"
        end
      end

      it 'reads files it did not write (SIMP 6, other tools) back as Strings, or binary Strings when not UTF-8' do
        plant('/gen_passwd/host1', "s3cret\n")
        plant('/gen_passwd/host2', '42')
        plant('/gen_passwd/host3', '{"libkv":2,"value":2}')
        plant('/gen_passwd/host4', "\xc3\x28".b)
        expect(store.get('/gen_passwd/host1')).to eq("s3cret\n")
        expect(store.get('/gen_passwd/host1').encoding).to eq(Encoding::UTF_8)
        expect(store.get('/gen_passwd/host2')).to eq('42')
        expect(store.get('/gen_passwd/host3')).to eq('{"libkv":2,"value":2}')
        expect(store.get('/gen_passwd/host4')).to eq("\xc3\x28".b)
        expect(store.get('/gen_passwd/host4').encoding).to eq(Encoding::BINARY)
        expect(store.exists('/gen_passwd/host1')).to be(true)
        expect(store.list('/gen_passwd').keys).to eq(%w[host1 host2 host3 host4])
        expect(store.list('/gen_passwd')['host2']).to eq('42')
        expect(store.atomic_get('/gen_passwd/host1')).to include('value' => "s3cret\n")
        expect(store.atomic_get('/gen_passwd/host1')['sequence']).to be_an(Integer).and be > 0
      end

      it "uses a file's modification time in nanoseconds as its sequence" do
        store.put('/k', 1)
        st = File.stat(path('/k'))
        expect(store.atomic_get('/k')['sequence']).to eq(st.mtime.to_i * 1_000_000_000 + st.mtime.nsec)
      end

      it 'notices a file another tool rewrote: the old previous fails, a new one works' do
        store.put('/k', 'mine')
        previous = store.atomic_get('/k')
        File.write(path('/k'), 'theirs')
        # Give the file a time the store has not issued: another tool's write.
        File.utime(Time.at(1), Time.at(1), path('/k'))
        expect(store.atomic_put('/k', 'mine again', previous)).to be(false)
        expect(store.get('/k')).to eq('theirs')
        expect(store.atomic_put('/k', 'mine again', store.atomic_get('/k'))).to be(true)
        expect(store.atomic_get('/k')['sequence']).to be > previous['sequence']
      end

      it 'persists: another store object on the same root sees the values' do
        store.put('/shared/k', [1, 'two'])
        expect(open_store.get('/shared/k')).to eq([1, 'two'])
        expect(open_store.atomic_get('/shared/k')).to eq(store.atomic_get('/shared/k'))
      end

      it 'never lists its own files nor names that cannot be keys' do
        store.put('/k', 1)
        expect(File.exist?(File.join(root, '.libkv@lock'))).to be(true)
        plant('/.k@123.0.tmp', 'a temp file left by a crash')
        plant('/dir/.x@1.2.tmp', 'another')
        plant('/dir/not a key', 'x')
        plant('/dir/ok', 'y')
        expect(store.list('/')).to eq('dir/ok' => 'y', 'k' => 1)
        expect(store.atomic_list('/dir').keys).to eq(['ok'])
        store.deletetree('/')
        expect(store.list('/')).to eq({})
        expect(store.put('/after', 1)).to be(true)
      end

      it 'removes directories left empty by delete and deletetree, never the root' do
        store.put('/a/b/c', 1)
        store.put('/x/y', 1)
        store.delete('/a/b/c')
        expect(File.exist?(path('/a'))).to be(false)
        store.deletetree('/x')
        expect(File.exist?(path('/x'))).to be(false)
        expect(Dir.exist?(root)).to be(true)
        store.atomic_delete('/gone', 0)
        expect(Dir.exist?(root)).to be(true)
      end

      it 'keeps its files and directories away from other users' do
        store.put('/dir/k', 'secret')
        expect(File.stat(path('/dir/k')).mode & 0o007).to eq(0)
        expect(File.stat(path('/dir')).mode & 0o007).to eq(0)
      end

      it 'replaces an empty directory at a key with the value' do
        FileUtils.mkdir_p(path('/empty'))
        expect(store.put('/empty', 'v')).to be(true)
        expect(File.binread(path('/empty'))).to eq('v')
      end

      # The store's lock held by another writer (another Puppet run): a put waits
      # for it, up to its timeout, while the other threads of this Ruby go on.
      it 'lets other Ruby threads run while a call waits for the lock another writer holds' do
        store.put('/k', 'v') # makes the root and its lock file
        waiting = LibKV.open(store_options[:url], store_options[:auth], vardir: store_options[:vardir] || File.join(tmp, 'vardir'),
                                                                        environment: 'production', timeout: 1)
        File.open(path('.libkv@lock'), 'r+') do |lock|
          expect(lock.flock(File::LOCK_EX | File::LOCK_NB)).to eq(0)
          ticks = 0
          ticker = Thread.new do
            loop do
              ticks += 1
              sleep 0.001
            end
          end
          expect { waiting.put('/k', 'w') }.to raise_error(LibKV::TimeoutError)
          ticker.kill
          # About 1,000 ticks fit in the second the put waits; with the GVL held, none.
          expect(ticks).to be > 100
        end
        expect(store.get('/k')).to eq('v')
      end

      describe 'a key below another key' do
        it 'raises LibKV::ConflictError naming both keys when the upper key holds a value' do
          store.put('/parent', 'value')
          calls = {
            put: -> { store.put('/parent/child', 1) },
            atomic_create: -> { store.atomic_create('/parent/child', 1) },
            atomic_put: -> { store.atomic_put('/parent/child', 1, 0) }
          }
          calls.each do |op, call|
            expect(&call).to raise_error(LibKV::ConflictError) { |e|
              expect(e).to be_a(LibKV::StoreError)
              expect(e.message).to include('/parent/child')
              expect(e.message).to match(%r{/parent(?!/)}), "#{op}: #{e.message}"
              expect(e.message).to include(store.url)
              expect(e.key).to eq('/parent/child')
            }
          end
          expect(store.get('/parent')).to eq('value')
          expect(store.exists('/parent/child')).to be(false)
        end

        it 'raises LibKV::ConflictError naming both keys when keys exist below it' do
          store.put('/p/c', 1)
          expect { store.put('/p', 2) }.to raise_error(LibKV::ConflictError) { |e|
            expect(e.message).to include('keys exist below /p (such as /p/c)')
            expect(e.key).to eq('/p')
          }
          expect { store.atomic_create('/p', 2) }.to raise_error(LibKV::ConflictError)
          expect(store.get('/p/c')).to eq(1)
          expect(store.exists('/p')).to be(false)
        end

        it 'reads the lower key as absent rather than failing' do
          store.put('/parent', 'value')
          expect(store.get('/parent/child')).to be_nil
          expect(store.exists('/parent/child')).to be(false)
          expect(store.atomic_get('/parent/child')).to eq(LibKV.empty_value)
          expect(store.list('/parent')).to eq({})
          expect(store.delete('/parent/child')).to be(true)
          expect(store.get('/parent')).to eq('value')
        end

        it 'works once the conflicting key is gone' do
          store.put('/p/c', 1)
          store.delete('/p/c')
          expect(store.put('/p', 2)).to be(true)
          expect(store.get('/p')).to eq(2)
        end
      end

      describe 'links planted in the store' do
        it 'refuses a symbolic link to a directory with LibKV::StoreError, never following it' do
          FileUtils.mkdir_p(root)
          File.symlink(outside, path('/link'))
          calls = {
            get: ['/link/secret', -> { store.get('/link/secret') }],
            exists: ['/link/secret', -> { store.exists('/link/secret') }],
            put: ['/link/new', -> { store.put('/link/new', 'x') }],
            atomic_create: ['/link/new', -> { store.atomic_create('/link/new', 'x') }],
            list: ['/', -> { store.list('/') }],
            list_link: ['/link', -> { store.list('/link') }],
            deletetree: ['/link', -> { store.deletetree('/link') }]
          }
          calls.each do |name, (key, call)|
            expect(&call).to raise_error(LibKV::StoreError) { |e|
              expect(e.message).to include('symbolic link'), "#{name}: #{e.message}"
              expect(e.message).to include(store.url)
              expect(e.key).to eq(key)
            }
          end
          expect(Dir.children(outside)).to eq(['secret'])
          expect(File.read(File.join(outside, 'secret'))).to eq('outside the store')
        end

        it 'refuses a symbolic link at a key with LibKV::StoreError, leaving its target alone' do
          FileUtils.mkdir_p(root)
          File.symlink(File.join(outside, 'secret'), path('/k'))
          expect { store.get('/k') }.to raise_error(LibKV::StoreError, /symbolic link/)
          expect { store.atomic_get('/k') }.to raise_error(LibKV::StoreError, /symbolic link/)
          expect { store.put('/k', 'overwritten') }.to raise_error(LibKV::StoreError, /symbolic link/)
          expect { store.atomic_list('/') }.to raise_error(LibKV::StoreError, /symbolic link/)
          expect(File.read(File.join(outside, 'secret'))).to eq('outside the store')
        end

        it 'refuses to read a file with several hard links' do
          FileUtils.mkdir_p(root)
          File.link(File.join(outside, 'secret'), path('/hard'))
          expect { store.get('/hard') }.to raise_error(LibKV::StoreError, /hard links/) { |e|
            expect(e.key).to eq('/hard')
          }
          expect { store.list('/') }.to raise_error(LibKV::StoreError, /hard links/)
        end
      end

      describe 'a store root that cannot be created' do
        let(:blocked) do
          File.write(File.join(tmp, 'in-the-way'), '')
          if b.name == 'legacy-simp6'
            { url: 'legacy-simp6://', auth: {}, vardir: File.join(tmp, 'in-the-way') }
          else
            { url: "file://#{tmp}/in-the-way/store", auth: {} }
          end
        end

        # The file store opens its root on first use, so that LibKV.open does no I/O
        # and a root that cannot be used now can be retried by the next call.
        it 'makes every call raise LibKV::StoreError naming the URL and the root, with the key' do
          broken = open_store(blocked)
          expect(broken.url).to eq(blocked[:url])
          calls = {
            get: ['/k', -> { broken.get('/k') }],
            put: ['/k', -> { broken.put('/k', 1) }],
            list: ['/', -> { broken.list('/') }],
            deletetree: ['/', -> { broken.deletetree('/') }],
            atomic_create: ['/k', -> { broken.atomic_create('/k', 1) }],
            atomic_put: ['/k', -> { broken.atomic_put('/k', 1, 0) }]
          }
          calls.each do |op, (key, call)|
            expect(&call).to raise_error(LibKV::StoreError) { |e|
              expect(e).not_to be_a(LibKV::ConflictError)
              expect(e.message).to include(blocked[:url]).and include('in-the-way')
              expect(e.message).to include('cannot use'), "#{op}: #{e.message}"
              expect(e.key).to eq(key)
            }
          end
          expect(File.file?(File.join(tmp, 'in-the-way'))).to be(true)
        end

        it 'works once the root can be created, with the same store object' do
          broken = open_store(blocked)
          expect { broken.put('/k', 1) }.to raise_error(LibKV::StoreError)
          File.delete(File.join(tmp, 'in-the-way'))
          expect(broken.put('/k', 1)).to be(true)
          expect(broken.get('/k')).to eq(1)
        end
      end

      if b.name == 'legacy-simp6'
        it 'is rooted in <vardir>/simp/environments/<environment>/simp_autofiles' do
          vardir = File.join(tmp, 'puppet')
          test_env = LibKV.open('legacy-simp6://', vardir: vardir, environment: 'test_env')
          expected = File.join(vardir, 'simp', 'environments', 'test_env', 'simp_autofiles')
          expect(test_env.info['root']).to eq(expected)
          test_env.put('/gen_passwd/host', 'pw')
          expect(File.read(File.join(expected, 'gen_passwd', 'host'))).to eq('pw')
          production = LibKV.open('legacy-simp6://', vardir: vardir, environment: 'production')
          expect(production.get('/gen_passwd/host')).to be_nil
        end
      end
    end
  end
end
