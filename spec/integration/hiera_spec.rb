# frozen_string_literal: true

require 'spec_helper'
require 'json'
require 'yaml'

# The Hiera backend libkv::lookup from the command line: `puppet apply` whose
# class parameters come from a store, and `puppet lookup --explain`, on a file
# store and on etcd, with data written beforehand by another client.
RSpec.describe 'libkv::lookup from the command line' do
  root = File.expand_path('../..', __dir__)
  etcd = LibKVTest.backends.any? { |b| b.provider == 'etcd' }

  include LibKVTest::PuppetApply

  certname = 'web01.example.com'

  # hiera.yaml: per-node data in the store, then a YAML level.
  def write_hiera(url)
    dir = File.join(tmp, 'hiera')
    FileUtils.mkdir_p(File.join(dir, 'data'))
    File.write(File.join(dir, 'data', 'common.yaml'),
               YAML.dump('app::port' => 1, 'app::hosts' => ['yaml.example.com'], 'app::label' => 'from-yaml'))
    File.write(File.join(dir, 'hiera.yaml'), <<~YAML)
      ---
      version: 5
      hierarchy:
        - name: "Per-node data in libkv"
          lookup_key: libkv::lookup
          options:
            url: "#{url}"
            prefix: "/hiera/%{trusted.certname}"
        - name: "Common data"
          path: "common.yaml"
          data_hash: yaml_data
    YAML
    File.join(dir, 'hiera.yaml')
  end

  {
    'file' => ->(tmp) { "file://#{tmp}/store" },
    'etcd' => ->(_tmp) { LibKVTest::Etcd.server(:plain).url(LibKVTest::Etcd.unique_prefix) },
  }.each do |store_name, make_url|
    context "on a #{store_name} store", if: store_name == 'file' || etcd do
      let(:url) { make_url.call(tmp) }
      let(:hiera) { write_hiera(url) }
      let(:args) { ['--certname', certname, '--hiera_config', hiera] }

      before do
        store = LibKV.open(url)
        store.put("/hiera/#{certname}/app::port", 8080)
        store.put("/hiera/#{certname}/app::hosts", %w[web01.example.com web02.example.com])
        store.put('/hiera/db01.example.com/app::port', 5432)
        store.close
      end

      it 'gives class parameters to puppet apply' do
        manifest = File.join(tmp, 'app.pp')
        File.write(manifest, <<~PUPPET)
          class app(Integer $port, Array[String] $hosts, String $label) {
            notice("app: port=${port} hosts=${hosts} label=${label}")
          }
          include app
        PUPPET
        out, err, status = puppet_apply_file(root, manifest, {}, '', [], args: args)
        expect(status).to be_success, err
        expect(out).to include('app: port=8080 hosts=[web01.example.com, web02.example.com] label=from-yaml')
      end

      it 'is explained by puppet lookup --explain' do
        out, err, status = puppet(root, 'lookup', ['--explain', 'app::port', *args])
        expect(status).to be_success, err
        expect(out).to include('Hierarchy entry "Per-node data in libkv"')
        expect(out).to include('Found key: "app::port" value: 8080')
        expect(out).to include("/hiera/#{certname}/app::port read from #{url}")
        expect(out).to include('libkv::lookup never reads \'lookup_options\' from a store')

        out, err, status = puppet(root, 'lookup', ['--render-as', 'json', 'app::hosts', *args])
        expect(status).to be_success, err
        expect(JSON.parse(out)).to eq(%w[web01.example.com web02.example.com])

        out, err, status = puppet(root, 'lookup', ['--explain', 'app::label', *args])
        expect(status).to be_success, err
        expect(out).to include("/hiera/#{certname}/app::label is not in #{url}")
        expect(out).to include('Found key: "app::label" value: "from-yaml"')
      end
    end
  end
end
