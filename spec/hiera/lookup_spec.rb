# frozen_string_literal: true

require 'spec_helper_puppet'
require 'net/http'
require 'yaml'

# The Hiera backend libkv::lookup, with rspec-puppet: class parameters from a
# libkv store, on every store, then what a site relies on: one read per key per
# compilation, and a compilation that goes on when the store is down.
RSpec.describe 'app', type: :class do
  include LibKVTest::Helpers

  let(:node) { 'web01.example.com' }

  # The class whose parameters Hiera supplies, and a notify that shows them.
  app_class = <<~PUPPET
    class app(Integer $port, Array[String] $hosts, Hash $tls, Binary $keytab, Boolean $enabled,
              String $label) {
      notify { 'app':
        message => "port=${port} hosts=${hosts} tls=${tls} keytab=${String($keytab, '%B')} enabled=${enabled} label=${label}",
      }
    }
  PUPPET

  # hiera.yaml: a libkv level with +options+, then a YAML level with +yaml+.
  def write_hiera(options, yaml)
    dir = File.join(tmp, 'hiera')
    FileUtils.mkdir_p(File.join(dir, 'data'))
    File.write(File.join(dir, 'hiera.yaml'), YAML.dump(
                                               'version' => 5,
                                               'hierarchy' => [
                                                 { 'name' => 'libkv', 'lookup_key' => 'libkv::lookup',
                                                   'options' => options },
                                                 { 'name' => 'common', 'path' => 'common.yaml',
                                                   'data_hash' => 'yaml_data' },
                                               ],
                                             ))
    File.write(File.join(dir, 'data', 'common.yaml'), YAML.dump(yaml))
    File.join(dir, 'hiera.yaml')
  end

  # What the YAML level holds: a value for every parameter, none of which the
  # store's level should let through.
  common = {
    'app::port' => 1, 'app::hosts' => ['yaml.example.com'], 'app::tls' => { 'from' => 'yaml' },
    'app::keytab' => 'eWFtbA==', 'app::enabled' => true, 'app::label' => 'from-yaml',
    'lookup_options' => { 'app::keytab' => { 'convert_to' => 'Binary' } }
  }

  LibKVTest.each_backend(self) do |b|
    let(:store) { store_options }
    let(:hiera_config) do
      options = { 'url' => store[:url], 'prefix' => '/hiera/%{trusted.certname}',
                  'confine_to_keys' => ['^app::(port|hosts|tls|keytab|enabled)$', '^spec::'] }
      options['auth'] = store[:auth] unless store[:auth].empty?
      write_hiera(options, common)
    end
    # The store's data, put by Puppet in the same compilation (a mock store's
    # data lives for one compilation): typed values, a falsy Boolean, a key the
    # level is confined away from, another node's value, and the keys Hiera and
    # libkv reserve.
    let(:pre_condition) do
      o = { 'url' => store[:url] }
      o['auth'] = store[:auth] unless store[:auth].empty?
      <<~PUPPET
        $o = #{o.inspect.gsub('=>', ' => ')}
        $h = '/hiera/web01.example.com'
        libkv::put("${h}/app::port", 8080, $o)
        libkv::put("${h}/app::hosts", ['web01.example.com', 'web02.example.com'], $o)
        libkv::put("${h}/app::tls", { 'enabled' => true, 'ciphers' => ['ECDHE'] }, $o)
        libkv::put("${h}/app::keytab", Binary('/wABAg==', '%B'), $o)
        libkv::put("${h}/app::enabled", false, $o)
        libkv::put("${h}/app::label", 'confined away', $o)
        libkv::put('/hiera/db01.example.com/app::port', 5432, $o)
        libkv::put("${h}/lookup_options", { 'app::hosts' => { 'merge' => 'unique' } }, $o)
        libkv::put("${h}/libkv::url", 'read from the store', $o)
        libkv::put("${h}/spec::nothing", undef, $o)
        #{app_class}
        notify { 'reserved': message => lookup('libkv::url', String, 'first', 'not looked up') }
        notify { 'invalid': message => lookup('spec::not a key', String, 'first', 'fell through') }
        notify { 'undef': message => "${lookup('spec::nothing', Any, 'first', 'fell through')}" }
      PUPPET
    end

    it "gives class parameters the #{b.name} store's values, typed, under the interpolated prefix" do
      expect(catalogue).to contain_notify('app').with_message(
        'port=8080 hosts=[web01.example.com, web02.example.com] tls={enabled => true, ciphers => [ECDHE]} ' \
        'keytab=/wABAg== enabled=false label=from-yaml',
      )
      # libkv::url is never read from a store, nor lookup_options (which would have
      # merged the YAML level's hosts in); a key that is no libkv key is not found;
      # a stored undef is found.
      expect(catalogue).to contain_notify('reserved').with_message('not looked up')
      expect(catalogue).to contain_notify('invalid').with_message('fell through')
      expect(catalogue).to contain_notify('undef').with_message('')
    end
  end

  context 'with options Hiera cannot use' do
    let(:pre_condition) { app_class }

    {
      { 'url' => 'mock://', 'prefix' => 'hiera' } => /entry 'prefix' expects a match for Pattern/,
      { 'url' => 'mock://', 'prefix' => '/hiera/' } => /entry 'prefix' expects a match for Pattern/,
      { 'url' => 'mock://', 'confine_to_keys' => ['(app'] } => /confine_to_keys holds "\(app", not a regular expression/,
      { 'url' => 'mock://', 'sofftail' => true } => /unrecognized key 'sofftail'/,
      { 'url' => 'nosuch://x' } => /nosuch/,
    }.each do |options, error|
      context options.inspect do
        let(:hiera_config) { write_hiera(options, common) }

        it 'fails the compilation, saying which' do
          expect { catalogue }.to raise_error(Puppet::PreformattedError, error)
        end
      end
    end
  end

  # A private etcd: its metrics count the requests one compilation makes, and it
  # can be stopped.
  context 'on etcd', if: LibKVTest.backends.any? { |b| b.provider == 'etcd' } do
    let(:server) { LibKVTest::Etcd.private_server(:plain) }
    let(:url) { server.url('/site') }
    let(:timeout) { 1 }
    let(:hiera_config) { write_hiera({ 'url' => url, 'prefix' => '/hiera', 'timeout' => timeout }, common) }
    # 200 lookups of 20 keys, the class's 6 parameters, and 5 keys no level holds.
    let(:pre_condition) do
      <<~PUPPET
        #{app_class}
        $sum = Integer[0, 199].reduce(0) |$s, $i| { $s + lookup("spec::k${$i % 20}", Integer, 'first', 0) }
        $missing = Integer[0, 199].map |$i| { lookup("spec::missing${$i % 5}", String, 'first', 'none') }.unique
        notify { 'sum': message => "sum=${sum} missing=${missing}" }
      PUPPET
    end

    before do
      store = LibKV.open(url)
      20.times { |i| store.put("/hiera/spec::k#{i}", i) }
      store.put('/hiera/app::port', 8080)
      store.put('/hiera/app::hosts', ['etcd.example.com'])
      store.close
    end

    # Requests etcd's KV service has started (Range, Put, Txn, DeleteRange).
    def kv_requests
      metrics = Net::HTTP.get(URI("http://127.0.0.1:#{server.port}/metrics"))
      metrics.scan(/^grpc_server_started_total\{[^}]*grpc_service="etcdserverpb\.KV"[^}]*\} (\d+)/).flatten.sum(&:to_i)
    end

    def monotonic
      Process.clock_gettime(Process::CLOCK_MONOTONIC)
    end

    it 'reads each distinct key once per compilation: 231 lookups of 31 keys, 31 reads' do
      before = kv_requests
      expect(catalogue).to contain_notify('sum').with_message("sum=#{10 * (0..19).sum} missing=[none]")
      expect(catalogue).to contain_notify('app').with_message(/\Aport=8080 hosts=\[etcd.example.com\] .*label=from-yaml\z/)
      # 20 + 5 + the class's 6 parameters, each once; never lookup_options or
      # libkv::url, libkv::auth, libkv::softfail, libkv::timeout.
      expect(kv_requests - before).to eq(31)
    end

    [['stopped', 'TERM', 'cannot reach the store'], ['frozen (SIGSTOP)', 'STOP', 'timed out']]
      .each do |state, signal, failure|
      context "when etcd is #{state}" do
        after do
          Process.kill('CONT', server.pid) if signal == 'STOP'
          LibKVTest::Etcd.stop(server)
        end

        it 'finishes the compilation within the timeout with the next level\'s values, warning once' do
          server
          if signal == 'TERM'
            LibKVTest::Etcd.stop(server)
          else
            Process.kill('STOP', server.pid)
          end
          started = monotonic
          expect(catalogue).to contain_notify('sum').with_message('sum=0 missing=[none]')
          expect(catalogue).to contain_notify('app').with_message(/\Aport=1 hosts=\[yaml.example.com\] /)
          expect(monotonic - started).to be < timeout + 1.5
          # libkv's warnings (Facter may add its own, as Puppet 8's does for serverip).
          warnings = log_messages(:warning).grep(/libkv/)
          expect(warnings.size).to eq(1), log_messages(:warning).inspect
          expect(warnings.first).to match(%r{\Alibkv::lookup of 'spec::k0': atomic_get /hiera/spec::k0 on #{Regexp.escape(url)} .*#{failure}.*\(softfail: this compilation's lookups in #{Regexp.escape(url)} fall through})
        end
      end
    end

    context 'when etcd is stopped and softfail is off' do
      let(:hiera_config) { write_hiera({ 'url' => url, 'prefix' => '/hiera', 'timeout' => timeout, 'softfail' => false }, common) }

      it 'fails the compilation, naming the key and the store' do
        LibKVTest::Etcd.stop(server)
        expect { catalogue }.to raise_error(Puppet::PreformattedError, %r{libkv::lookup of 'spec::k0': atomic_get /hiera/spec::k0 on #{Regexp.escape(url)} failed: cannot reach the store})
      end
    end
  end

  def log_messages(level = nil)
    @logs.select { |l| level.nil? || l.level == level }.map { |l| l.message.to_s }
  end
end
