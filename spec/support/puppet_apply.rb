# frozen_string_literal: true

require 'open3'

module LibKVTest
  # `puppet apply` in a process of its own, through this checkout's module and
  # extension, with Puppet's directories in the example's temp dir.
  module PuppetApply
    # A modulepath holding this repository as the module libkv.
    def modulepath(root)
      @modulepath ||= File.join(tmp, 'modules').tap do |modules|
        FileUtils.mkdir_p(modules)
        File.symlink(root, File.join(modules, 'libkv'))
      end
    end

    # Puppet's vardir for the runs named +name+.
    def puppet_vardir_of(name = '')
      File.join(tmp, "puppet#{name}", 'var')
    end

    # puppet apply of +manifest+ (a path), with Puppet dirs of the example's own.
    # Processes running at once get dirs of their own (+name+): Puppet's setup of
    # a new vardir is not safe against another process doing the same. Real
    # Facter supplies the facts, as on any node. +prefix+ runs it through another
    # command.
    def puppet_apply_file(root, manifest, env = {}, name = '', prefix = [], args: [])
      puppet(root, 'apply', [*args, manifest], env, name, prefix)
    end

    # puppet SUBCOMMAND ARGS (apply, lookup) with the module and Puppet dirs of the
    # example's own.
    def puppet(root, subcommand, args, env = {}, name = '', prefix = [])
      dirs = File.join(tmp, "puppet#{name}")
      cmd = [*prefix, 'puppet', subcommand, '--modulepath', modulepath(root), '--vardir', puppet_vardir_of(name),
             '--confdir', File.join(dirs, 'conf'), '--codedir', File.join(dirs, 'code'),
             '--logdir', File.join(dirs, 'log'), '--rundir', File.join(dirs, 'run'), '--ssldir', File.join(dirs, 'ssl'),
             '--color', 'false', *args]
      lib = LibKVTest.checkout_lib
      env = (lib ? { 'RUBYLIB' => lib } : {}).merge(env)
      Open3.capture3(env, *cmd)
    end
  end
end
