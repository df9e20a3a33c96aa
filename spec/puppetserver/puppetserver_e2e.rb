# frozen_string_literal: true

# End to end, through a real puppetserver (Debian's, JRuby): `rake puppetserver`
# (part of `rake test`) builds the java gem and runs this file. It is not named
# *_spec.rb, so `rake spec` leaves it out: it takes minutes and a JVM.
#
# The server gets the libkv java gem with `puppetserver gem install`, libkv and a
# test module in its production environment, and max-active-instances: 2. Puppet
# agents (`puppet agent -t --server 127.0.0.1`) then have it compile
# spec/puppetserver/manifests/site.pp, whose results the test reads from the
# compiled catalogs and from the stores themselves (through the MRI extension).

require 'yaml'
require_relative '../spec_helper'
require_relative 'server'

RSpec.describe 'libkv in a real puppetserver (JRuby)' do
  root = File.expand_path('../..', __dir__)
  gem_file = ENV['LIBKV_JAVA_GEM'] || File.join(root, 'pkg', "libkv-#{LibKV::VERSION}-java.gem")
  module_package = ENV['LIBKV_MODULE_PACKAGE'] || File.join(root, 'pkg', "libkv-libkv-#{LibKV::VERSION}.tar.gz")

  before(:all) do
    raise "#{gem_file} is missing: build it with `rake gem:java` (rake puppetserver does)" unless File.exist?(gem_file)
    unless File.exist?(module_package)
      raise "#{module_package} is missing: build it with `rake module:build` (rake puppetserver does)"
    end

    @etcd = LibKVTest::Etcd.server(:plain)
    @server = LibKVTest::Puppetserver.new(gem_file, module_package, instances: 2)
    started = Process.clock_gettime(Process::CLOCK_MONOTONIC)
    @server.start
    warn format('puppetserver answered after %.0fs', Process.clock_gettime(Process::CLOCK_MONOTONIC) - started)
    @hiera_url = @etcd.url(LibKVTest::Etcd.unique_prefix)
    write_hiera(@hiera_url)
  end

  after(:all) { @server&.stop }

  # A file store the server (user puppet) may write, and an etcd prefix, new for
  # each example.
  def stores
    @stores ||= begin
      root = @server.path('stores', "s#{rand(1 << 30)}")
      FileUtils.mkdir_p(root)
      give_to_puppet("file://#{root}")
      { 'file' => "file://#{root}", 'etcd' => @etcd.url(LibKVTest::Etcd.unique_prefix) }
    end
  end

  # What the test wrote in a file store (as root) becomes the server's again.
  def give_to_puppet(file_url)
    puppet = Etc.getpwnam('puppet')
    FileUtils.chown_R(puppet.uid, puppet.gid, file_url.sub('file://', ''))
  end

  # The production environment's Hiera: libkv_e2e::* keys per node from etcd
  # through libkv::lookup, then YAML. (It reads the environment's hiera.yaml at
  # each compilation.)
  def write_hiera(url)
    production = @server.path('code', 'environments', 'production')
    FileUtils.mkdir_p(File.join(production, 'data'))
    File.write(File.join(production, 'hiera.yaml'), <<~YAML)
      ---
      version: 5
      hierarchy:
        - name: "Per-node data in etcd"
          lookup_key: libkv::lookup
          options:
            url: "#{url}"
            prefix: "/hiera/%{trusted.certname}"
            confine_to_keys: ['^libkv_e2e::']
        - name: "Common data"
          path: "common.yaml"
          data_hash: yaml_data
    YAML
    File.write(File.join(production, 'data', 'common.yaml'),
               YAML.dump('libkv_e2e::app::port' => 1, 'libkv_e2e::app::hosts' => ['yaml'],
                         'libkv_e2e::app::label' => 'from-yaml'))
  end

  def facts(test, extra = {})
    { 'libkv_e2e_test' => test, 'libkv_e2e_file_url' => stores['file'], 'libkv_e2e_etcd_url' => stores['etcd'] }
      .merge(extra)
  end

  # Runs an agent and checks it got and applied a catalog (-t: exit 2 = changes).
  def run_agent(certname, facts)
    output, status, catalog = @server.agent(certname, facts)
    expect([0, 2]).to include(status.exitstatus), "puppet agent #{certname} failed (#{status}):\n#{output}"
    expect(catalog).not_to be_nil, "no catalog for #{certname}:\n#{output}"
    [output, catalog]
  end

  def message(catalog, title)
    LibKVTest::Puppetserver.notify_message(catalog, title)
  end

  it 'compiles a catalog that writes and reads libkv keys on the file store and on etcd, in JRuby' do
    stores.each_value { |url| LibKV.open(url).put('/e2e/seeded', 'put by the test') }
    give_to_puppet(stores['file'])
    output, catalog = run_agent('node-roundtrip', facts('roundtrip'))
    expect(output).to include('Applied catalog')

    runtime = message(catalog, 'libkv-e2e runtime')
    # puppetserver runs Debian's JRuby: 9.3 (Ruby 2.6) with puppetserver 7, 9.4 (Ruby 3.1) with 8.
    jruby_ruby, status = Open3.capture2('jruby', '-e', 'print RUBY_VERSION')
    expect(status).to be_success
    expect(runtime).to include('engine' => 'jruby', 'version' => jruby_ruby)
    # The library the server loaded is the installed gem's: the module, deployed as
    # the README says, holds no compiled code.
    expect(runtime['library']).to start_with(@server.path('jruby-gems', 'gems', "libkv-#{LibKV::VERSION}-java"))
    expect(@server.compiled_files).to eq([])
    expect(File).to exist(File.join(@server.module_dir, 'lib', 'puppet', 'functions', 'libkv', 'get.rb'))

    node = '/e2e/node-roundtrip'
    stores.each do |name, url|
      result = message(catalog, "libkv-e2e #{name}")
      expect(result).to include('provider' => name, 'seeded' => 'put by the test', 'created' => [true, false],
                                'swapped' => [true, false], 'port' => 8443, 'missing' => nil)
      expect(result['types']).to include("#{node}/port" => 'Integer', "#{node}/ratio" => 'Float',
                                         "#{node}/keytab" => 'Binary', "#{node}/password" => 'String')
      expect(result['listed']).to eq(%w[created keytab password port ratio servers settings])

      # What the compile wrote, read back from the store itself.
      store = LibKV.open(url)
      expect(store.get("#{node}/port")).to eq(8443)
      expect(store.get("#{node}/password")).to eq('correct horse battery staple')
      expect(store.get("#{node}/keytab")).to eq('BQIAAABHAAIAC0VYQU1QTEUuQ09N'.unpack1('m0'))
      expect(store.get("#{node}/keytab").encoding).to eq(Encoding::BINARY)
      expect(store.get("#{node}/settings")).to eq('tls' => true, 'peers' => { 'db' => '10.0.0.2' }, 1 => nil)
      expect(store.get("#{node}/created")).to eq('node-roundtrip')
      # Facts and $trusted, as the agent and the server made them, stored as text.
      expect(result['primary']).to eq([true, true])
      expect(result['hosts']).to eq('node-roundtrip' => result['ip'])
      expect(store.get('/e2e/primary/node-roundtrip')).to eq('node-roundtrip')
    end
    file_root = stores['file'].sub('file://', '')
    expect(File.binread(File.join(file_root, 'e2e', 'primary', 'node-roundtrip'))).to eq('node-roundtrip')
    ip = message(catalog, 'libkv-e2e file')['ip']
    expect(ip).to be_a(String)
    expect(File.binread(File.join(file_root, 'e2e', 'hosts', 'node-roundtrip'))).to eq(ip)
    expect(File.read(File.join(stores['file'].sub('file://', ''), 'e2e', 'node-roundtrip', 'port')))
      .to eq('{"libkv":1,"value":8443}')
  end

  it 'compiles catalogs whose class parameters libkv::lookup reads from etcd, fresh at each compilation' do
    store = LibKV.open(@hiera_url)
    store.put('/hiera/node-hiera/libkv_e2e::app::port', 8080)
    store.put('/hiera/node-hiera/libkv_e2e::app::hosts', %w[web01 web02])
    _, catalog = run_agent('node-hiera', facts('hiera'))
    expect(message(catalog, 'libkv-e2e hiera')).to eq('port' => 8080, 'hosts' => %w[web01 web02], 'label' => 'from-yaml')

    # The next compilation, in a JRuby instance that may have served the first,
    # reads the store again.
    store.put('/hiera/node-hiera/libkv_e2e::app::port', 8443)
    store.delete('/hiera/node-hiera/libkv_e2e::app::hosts')
    _, catalog = run_agent('node-hiera', facts('hiera'))
    expect(message(catalog, 'libkv-e2e hiera')).to eq('port' => 8443, 'hosts' => ['yaml'], 'label' => 'from-yaml')
  end

  it 'counts exactly when two JRuby instances compile at once, racing atomic increments on one key' do
    racers = %w[node-race-1 node-race-2]
    # Per racer and store: enough that each racer's increments take seconds (each
    # is two function calls in a compile, and retries), far longer than the
    # barrier's skew (some tens of milliseconds).
    increments = 100
    race_facts = facts('race', 'libkv_e2e_racers' => racers.size, 'libkv_e2e_increments' => increments)
    catalogs = racers.map { |certname| Thread.new { run_agent(certname, race_facts).last } }.map(&:value)

    # Both compiles waited for each other before incrementing, each in its own
    # JRuby instance: one instance would have compiled them one after the other.
    instances = catalogs.map { |c| message(c, 'libkv-e2e runtime')['instance'] }
    expect(instances.uniq.size).to eq(2), "both catalogs came from JRuby instance #{instances.first}"
    races = catalogs.map { |c| message(c, 'libkv-e2e race') }
    races.each { |race| expect(race['arrived'].values).to match_array(instances) }
    stores.each do |name, url|
      reports = races.map { |race| race.fetch('stores').fetch(name) }
      report_race(name, racers, increments, reports)
      # The increments overlapped: each racer's window began before the other's ended
      # (monotonic clocks of one JVM).
      windows = reports.map { |r| r.fetch('monotonic') }
      expect(windows.map(&:first).max).to be < windows.map(&:last).min,
                                           "the racers' windows on #{name} do not overlap: #{windows.inspect}"
      expect(LibKV.open(url).get('/e2e/race/counter')).to eq(racers.size * increments), "the count on #{name}"
    end
  end

  it 'keeps sections apart when two JRuby instances compile at once, each taking one lock with libkv::with_lock' do
    racers = %w[node-lockrace-1 node-lockrace-2]
    sections = 50
    race_facts = facts('lockrace', 'libkv_e2e_racers' => racers.size, 'libkv_e2e_sections' => sections)
    catalogs = racers.map { |certname| Thread.new { run_agent(certname, race_facts).last } }.map(&:value)
    instances = catalogs.map { |c| message(c, 'libkv-e2e runtime')['instance'] }
    expect(instances.uniq.size).to eq(2), "both catalogs came from JRuby instance #{instances.first}"
    races = catalogs.map { |c| message(c, 'libkv-e2e lockrace') }
    stores.each do |name, url|
      intervals = races.flat_map { |race| race.fetch('stores').fetch(name) }.sort_by(&:first)
      expect(intervals.size).to eq(racers.size * sections)
      overlaps = intervals.each_cons(2).select { |(_, ended, _), (started, _, _)| started < ended }
      expect(overlaps).to be_empty, "sections on #{name} overlap: #{overlaps.first(3).inspect}"
      fences = intervals.map(&:last)
      expect(fences).to eq(fences.sort.uniq), "fences on #{name} grow with every acquisition"
      expect(LibKV.open(url).get('/e2e/lockrace/counter')).to eq(racers.size * sections), "the count on #{name}"
      both = races.map { |race| race.fetch('stores').fetch(name).map(&:first) }
      # The racers' sections interleaved: each ran some while the other was between its own.
      expect(both.map(&:min).max).to be < both.map(&:max).min, "the racers did not contend on #{name}"
      warn format('lock race on %<name>s: %<n>d sections under libkv::with_lock in %<s>.3fs from two JRuby instances',
                  name: name, n: intervals.size, s: intervals.last[1] - intervals.first.first)
    end
  end

  it 'compiles a catalog that waits with libkv::watch until the test writes the key, on the file store and on etcd' do
    written = {}
    writer = Thread.new do
      sleep 8
      stores.each do |name, url|
        # As the server's user, whose file store it is (its files are not others' to read).
        puppet = Etc.getpwnam('puppet')
        child = fork do
          Process::GID.change_privilege(puppet.gid)
          Process::UID.change_privilege(puppet.uid)
          LibKV.open(url).put('/e2e/watch/node-watch', "published on #{name}")
          exit!(0)
        rescue StandardError => e
          warn "the write on #{name} failed: #{e.message}"
          exit!(1)
        end
        Process.wait(child)
        raise "the write on #{name} failed (#{$?})" unless $?.success?

        written[name] = Time.now.to_f
        sleep 2
      end
    end
    _, catalog = run_agent('node-watch', facts('watch'))
    writer.join
    waited = message(catalog, 'libkv-e2e watch')
    stores.each_key do |name|
      value, found, returned = waited.fetch(name)
      expect([value, found]).to eq(["published on #{name}", true])
      # It returned once the key was written, not at its timeout (120 s).
      expect(returned).to be_between(written[name] - 0.5, written[name] + 10)
    end
  end

  # Prints, per store, how the racers' increments went.
  def report_race(name, racers, increments, reports)
    windows = reports.map { |r| r['monotonic'] }
    overlap = windows.map(&:last).min - windows.map(&:first).max
    lines = racers.zip(reports).map do |racer, r|
      format('  %<racer>s: %<n>d increments in %<s>.3fs, %<retries>d retries (lost atomic_puts), ' \
             'wall %<from>.3f..%<to>.3f', racer: racer, n: increments, s: r['monotonic'].last - r['monotonic'].first,
                                         retries: r['retries'], from: r['wall'].first, to: r['wall'].last)
    end
    warn format("race on %<name>s: started %<skew>.1f ms apart, overlapped %<overlap>.3fs\n%<lines>s",
                name: name, skew: (windows.map(&:first).max - windows.map(&:first).min) * 1000,
                overlap: overlap, lines: lines.join("\n"))
  end
end
