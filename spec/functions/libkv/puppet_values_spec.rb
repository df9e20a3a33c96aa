# frozen_string_literal: true

require 'spec_helper_puppet'

# Values as Puppet makes them, not literals in a spec: facts as Facter delivers
# them (BINARY, ASCII-8BIT, Ruby Strings: networking and hostname are), $trusted,
# strings interpolated from them, function results and Hiera data. Puppet
# Strings are stored as their text whatever encoding their Ruby strings carry;
# only a Binary is bytes.
RSpec.describe 'values as Puppet makes them', type: :host do
  include LibKVTest::Helpers

  # rspec-puppet makes the hostname, fqdn and domain facts from the node's name.
  let(:node) { 'web01.example.com'.b }
  let(:hiera_config) { File.expand_path('../../fixtures-static/hiera-values/hiera.yaml', __dir__) }
  let(:store_url) { "file://#{tmp}/store" }

  shared_examples 'stores them as their text' do
    let(:pre_condition) { <<~PP }
      $u = { 'url' => '#{store_url}' }
      $certname = $trusted['certname']
      $values = {
        '/primary'     => $certname,
        '/fqdn'        => $facts['networking']['fqdn'],
        '/ip'          => $facts['networking']['ip'],
        '/hostname'    => $facts['hostname'],
        '/interpolated' => "host-${facts['hostname']}.${facts['networking']['domain']}",
        '/upcased'     => upcase($facts['hostname']),
        '/joined'      => join([$facts['hostname'], $certname], ','),
        '/formatted'   => sprintf('%s:%s', $facts['hostname'], 8080),
        '/hiera'       => lookup('libkv_spec::name'),
        '/nested'      => { $facts['hostname'] => [$certname, lookup('libkv_spec::servers')] },
      }
      $values.each |$key, $value| {
        libkv::put($key, $value, $u)
        $back = libkv::get($key, $u)
        unless $back == $value and type($back, 'generalized') == type($value, 'generalized') {
          fail("${key}: stored ${value} (${type($value, 'generalized')}), read back ${back} (${type($back, 'generalized')})")
        }
      }
      # The README's first example: the first node to ask becomes the primary.
      unless libkv::atomic_create('/app/primary', $certname, $u) { fail('atomic_create lost on an empty store') }
      if libkv::atomic_create('/app/primary', $certname, $u) { fail('atomic_create won twice') }
      unless libkv::get('/app/primary', $u) == $certname { fail('the primary is not this node') }
      libkv::put("/app/hosts/${certname}", $facts['networking']['ip'], $u)
      $hosts = libkv::list('/app/hosts', $u)
      unless $hosts == { $certname => $facts['networking']['ip'] } and $hosts[$certname] =~ String {
        fail("hosts: ${hosts}")
      }
      # A lock released by comparing its holder.
      $lock = libkv::atomic_get('/app/primary', $u)
      unless $lock['value'] == $certname and libkv::atomic_delete('/app/primary', $lock, $u) {
        fail('the holder could not release the lock it holds')
      }
      # With serialize => false too, a String is its text.
      libkv::put('/raw', $certname, $u + { 'serialize' => false })
      unless libkv::get('/raw', $u + { 'serialize' => false }) == $certname { fail('raw') }
      notify { 'facts': message => [$facts['hostname'], $facts['networking']['domain'], $facts['networking']['ip']] }
    PP

    it 'compiles, every value reading back equal, and the store holds their plain text' do
      is_expected.to compile
      # The facts the compilation had (rspec-puppet makes some from the node's name).
      hostname, domain, ip = catalogue.resource('Notify', 'facts')[:message]
      store = "#{tmp}/store"
      expect(File.binread("#{store}/primary")).to eq(node)
      expect(File.binread("#{store}/hostname")).to eq(hostname)
      expect(File.binread("#{store}/interpolated")).to eq("host-#{hostname}.#{domain}")
      expect(File.binread("#{store}/raw")).to eq(node)
      expect(File.binread("#{store}/app/hosts/#{node}")).to eq(ip)
      expect(File.read("#{store}/nested")).to eq(%({"libkv":1,"value":{"#{hostname}":["#{node}",["db01","db02"]]}}))
    end
  end

  context 'with facts as Facter delivers them (BINARY Ruby Strings)' do
    let(:facts) do
      { 'hostname' => 'web01'.b,
        'networking' => { 'fqdn' => 'web01.example.com'.b, 'domain' => 'example.com'.b, 'ip' => '10.0.0.1'.b } }
    end

    include_examples 'stores them as their text'
  end

  context "with this machine's own facts, from Facter" do
    let(:facts) do
      require 'facter'
      networking = Facter.value('networking')
      { 'hostname' => Facter.value('hostname'),
        'networking' => networking.merge('domain' => networking['domain'] || 'localdomain'.b,
                                         'ip' => networking['ip'] || '127.0.0.1'.b) }
    end

    include_examples 'stores them as their text'
  end

  context 'with a String that is not text' do
    let(:facts) { { 'libkv_spec_bytes' => "web\xff".b } }
    let(:pre_condition) { "libkv::put('/bad', $facts['libkv_spec_bytes'], { 'url' => '#{store_url}' })" }

    it 'refuses it, naming the key and saying how to store bytes, and stores nothing' do
      is_expected.to compile.and_raise_error(%r{libkv::put: the String to store at /bad is not valid UTF-8 text; to store bytes, pass a Binary})
      expect(File.exist?("#{tmp}/store/bad")).to be(false)
    end
  end
end
