# frozen_string_literal: true

module LibKVTest
  # Where a Ruby process the specs start finds libkv: this checkout's lib/, or,
  # with LIBKV_TEST_INSTALLED_GEM=1, the installed gem (no -I, no RUBYLIB).
  def self.checkout_lib
    ENV['LIBKV_TEST_INSTALLED_GEM'] == '1' ? nil : File.expand_path('../../lib', __dir__)
  end

  # A temp directory per example, and the options of the example's store.
  module Helpers
    def tmp
      @tmp ||= Dir.mktmpdir('libkv-spec')
    end

    def self.included(base)
      base.after { FileUtils.rm_rf(@tmp) if @tmp }
    end

    # A process of its own that opens +url+ with no ca_file, its system CAs being
    # +ca_file+ (rustls reads SSL_CERT_FILE): its stdout, stderr and status after a
    # put and a get.
    def with_system_roots(url, ca_file)
      script = "s = LibKV.open(#{url.inspect}, {}, timeout: 3); s.put('/k', 'v'); print s.get('/k')"
      ruby_process("require 'libkv'; #{script}", 'SSL_CERT_FILE' => ca_file)
    end

    # Runs +script+ in a new process of this Ruby (MRI or JRuby) with this
    # checkout's lib/ on its load path (LibKVTest.checkout_lib) and +env+ added:
    # for what a process reads once from its environment. Returns stdout, stderr
    # and the status.
    def ruby_process(script, env = {})
      require 'open3'
      lib = LibKVTest.checkout_lib
      Open3.capture3(env, RbConfig.ruby, *(lib ? ['-I', lib] : []), '-e', script)
    end
  end

  # Everything an example group over one backend needs: `backend` is set by
  # `LibKVTest.each_backend`.
  module BackendContext
    def store_options
      @store_options ||= backend.fresh.call(tmp)
    end

    def broken_options
      @broken_options ||= backend.broken.call(tmp)
    end

    def url
      store_options[:url]
    end

    def auth
      store_options[:auth]
    end

    # The Ruby API store of this example.
    def open_store(options = store_options)
      LibKV.open(options[:url], options[:auth], vardir: options[:vardir] || File.join(tmp, 'vardir'),
                                                environment: 'production')
    end
  end

  # Calls to libkv:: functions inside one rspec-puppet compilation.
  module FunctionHelpers
    # Calls libkv::<name>. rspec-puppet points Puppet[:vardir] at a new temp dir
    # whenever it loads a function, so it is pinned to the example's own here.
    def libkv(name, *args, &block)
      function = (@libkv_functions ||= {})[name] ||= find_function("libkv::#{name}")
      raise "no function libkv::#{name}" unless function

      Puppet[:vardir] = puppet_vardir
      function.execute(*args, &block)
    end

    # The store object the functions of this example use for +options+ (on the
    # mock: the compilation's, which holds its data).
    def libkv_store(options = opts)
      function = (@libkv_functions ||= {})['get'] ||= find_function('libkv::get')
      Puppet[:vardir] = puppet_vardir
      PuppetX::Libkv.store_for_options(function.func, options).last
    end

    def puppet_vardir
      (respond_to?(:store_options) && store_options[:vardir]) || File.join(tmp, 'vardir')
    end

    # The options Hash that selects the example's store.
    def opts(extra = {})
      base = { 'url' => store_options[:url] }
      base['auth'] = store_options[:auth] unless store_options[:auth].empty?
      base.merge(extra)
    end

    def broken_opts(extra = {})
      base = { 'url' => broken_options[:url], 'timeout' => 2 }
      base['auth'] = broken_options[:auth] unless broken_options[:auth].empty?
      base.merge(extra)
    end

    def log_messages(level = nil)
      @logs.select { |l| level.nil? || l.level == level }.map { |l| l.message.to_s }
    end
  end

  # Whole catalogs in rspec-puppet (a `type: :host` group).
  module CatalogHelpers
    # Compiles +code+ for the node web01.example.com, whose $trusted['certname'] it is.
    def compile(code)
      Puppet[:code] = code
      node = Puppet::Node.new('web01.example.com', environment: Puppet.lookup(:current_environment))
      node.trusted_data = { 'authenticated' => 'remote', 'certname' => 'web01.example.com', 'extensions' => {},
                            'hostname' => 'web01', 'domain' => 'example.com' }
      Puppet::Parser::Compiler.compile(node)
    end
  end

  # Defines one context per selected backend, with `backend` and its helpers.
  def self.each_backend(group, &block)
    backends.each do |b|
      group.context("on the #{b.name} store", store: b.name) do
        let(:backend) { b }
        include BackendContext
        instance_exec(b, &block)
      end
    end
  end
end
