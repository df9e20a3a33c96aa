# frozen_string_literal: true

require 'spec_helper'
require 'open3'
require 'json'

# A user's own module, tested with rspec-puppet as the README's "Testing your own
# module" says: puppetlabs_spec_helper's fixtures (libkv a symbolic link to this
# checkout here, a repository there), libkv::url 'mock://' in the spec's Hiera,
# the gem in the test Ruby (here: this checkout's lib/, which holds the
# extension).
RSpec.describe "a user's own module testing its libkv calls" do
  root = File.expand_path('../..', __dir__)
  readme = File.read(File.join(root, 'README.md'))
  section = readme[/^### Testing your own module\n(.*?)^## /m, 1]

  # The README's file of that section whose first line is "# PATH".
  file = lambda do |path|
    blocks = section.scan(/^```(?:yaml|ruby)\n(.*?)^```$/m).map(&:first)
    blocks.find { |b| b.lines.first.strip == "# #{path}" } or raise "the README shows no #{path}"
  end

  it "passes its specs, with the README's files, every libkv call on a fresh mock store" do
    mod = File.join(tmp, 'myapp')
    FileUtils.mkdir_p(%w[manifests spec/classes spec/fixtures/hiera/data].map { |d| File.join(mod, d) })
    File.write(File.join(mod, 'metadata.json'),
               JSON.generate(name: 'example-myapp', version: '1.0.0', author: 'example', summary: 'myapp',
                             license: 'Apache-2.0', source: 'https://example.com/myapp', dependencies: []))
    File.write(File.join(mod, 'Rakefile'), "require 'puppetlabs_spec_helper/rake_tasks'\n")
    # libkv from this checkout, not the network: the README's fixture with a link.
    fixtures = file.call('.fixtures.yml')
    repository = "  repositories:\n    libkv: 'https://github.com/libkv/libkv.git'\n"
    expect(fixtures).to include(repository)
    File.write(File.join(mod, '.fixtures.yml'),
               fixtures.sub(repository, '').sub("  symlinks:\n", "  symlinks:\n    libkv: '#{root}'\n"))
    %w[spec/fixtures/hiera/hiera.yaml spec/fixtures/hiera/data/common.yaml spec/spec_helper.rb
       spec/classes/myapp_spec.rb].each do |path|
      File.write(File.join(mod, path), file.call(path))
    end
    File.write(File.join(mod, 'manifests', 'init.pp'), <<~PP)
      class myapp {
        # The first node to ask becomes the primary.
        libkv::atomic_create('/myapp/primary', $trusted['certname'])
        $primary = libkv::get('/myapp/primary')
        unless libkv::provider() == 'mock' and $primary == $trusted['certname'] {
          fail("the primary is ${primary}, on ${libkv::provider()}")
        }
        # The store is new for each example: nothing from another compilation.
        if libkv::exists('/myapp/previous-example') { fail('the store is not fresh') }
        libkv::put('/myapp/previous-example', true)
        notify { "primary: ${primary}": }
      }
    PP
    File.write(File.join(mod, 'spec', 'classes', 'twice_spec.rb'), <<~RUBY)
      require 'spec_helper'

      describe 'myapp' do
        let(:node) { 'web01.example.com' }
        2.times { it { is_expected.to contain_notify('primary: web01.example.com') } }
      end
    RUBY
    lib = LibKVTest.checkout_lib
    env = lib ? { 'RUBYLIB' => lib } : {}
    out, status = Open3.capture2e(env, "rake", "spec", chdir: mod)
    expect(status).to be_success, out
    expect(out).to match(/^3 examples, 0 failures/)
  end
end
