# frozen_string_literal: true

require 'etc'
require 'fileutils'
require 'json'
require 'net/http'
require 'open3'
require 'openssl'
require 'socket'
require 'tmpdir'
require 'timeout'

module LibKVTest
  # A real puppetserver (Debian's, JRuby) in a temp dir of its own, on
  # 127.0.0.1 and a free port: its own config (conf.d), CA, code dir with libkv
  # and the test module in the production environment, and gem home, into which
  # the libkv java gem is installed with `puppetserver gem install`, as the README
  # tells an admin. Nothing outside the temp dir is changed. Started with
  # `puppetserver foreground` in a session of its own; stopped by the PID of its
  # JVM, and the temp dir removed.
  #
  # Debian's `puppetserver foreground` runs java under `runuser -c`, which starts
  # a session of its own, so a signal to the launcher's process group does not
  # reach the JVM, and a KILL there would leave the JVM running. The JVM is found
  # as the java process below the launcher whose command line names this
  # server's conf.d, and stopped by its PID: TERM, then KILL after a deadline,
  # until it is gone and the port is closed. An at_exit hook stops it too, should
  # rspec end without running the after hook.
  class Puppetserver
    SYSTEM_CONF = '/etc/puppet/puppetserver/conf.d'
    START_TIMEOUT = 300
    AGENT_TIMEOUT = 240
    STOP_TIMEOUT = 60

    attr_reader :dir, :port, :log

    def initialize(gem_file, module_package, instances: 2)
      @gem_file = gem_file
      @module_package = module_package
      @instances = instances
      @dir = Dir.mktmpdir('libkv-puppetserver')
      FileUtils.chmod(0o755, @dir)
      @port = TCPServer.open('127.0.0.1', 0) { |s| s.addr[1] }
      @log = File.join(@dir, 'server.log')
      @pid = nil # the launcher (setsid, then puppetserver's scripts), our child
      @jvm = nil # [pid, start time] of the JVM
      @stopped = false
    end

    def path(*parts)
      File.join(@dir, *parts)
    end

    # Sets everything up and starts the server; returns once it answers.
    def start
      write_config
      install_gem
      setup_ca
      install_code
      own_by_puppet
      at_exit { stop }
      spawn_server
      wait_until_up
      self
    end

    # Stops the JVM by its PID (TERM, then KILL after STOP_TIMEOUT seconds), and
    # the launcher; raises unless the JVM is gone and the port closed. Then
    # removes the temp dir. Does nothing the second time.
    def stop
      return if @stopped

      @stopped = true
      started = monotonic
      find_jvm
      if @jvm
        signal_jvm('TERM')
        unless wait_until(STOP_TIMEOUT) { !jvm_alive? }
          warn "puppetserver's JVM (pid #{@jvm.first}) did not stop within #{STOP_TIMEOUT}s of TERM: KILL"
          signal_jvm('KILL')
          wait_until(30) { !jvm_alive? }
        end
      end
      stop_launcher
      port_closed = wait_until(30) { !port_open? }
      raise "puppetserver's JVM (pid #{@jvm.first}) is still running" if @jvm && jvm_alive?
      raise "port #{@port} is still open after puppetserver stopped" unless port_closed

      warn format('puppetserver stopped: JVM pid %<pid>s gone, port %<port>d closed, after %<s>.1fs',
                  pid: @jvm ? @jvm.first : 'never found', port: @port, s: monotonic - started)
    ensure
      FileUtils.rm_rf(@dir) if @stopped
    end

    # The JVM's PID, once found.
    def jvm_pid
      @jvm && @jvm.first
    end

    # Where libkv is deployed, as a module of the production environment.
    def module_dir
      path('code', 'environments', 'production', 'modules', 'libkv')
    end

    # Compiled libraries in the deployed module (there must be none).
    def compiled_files
      Dir.glob('**/*.{so,bundle,dll,dylib}', base: module_dir)
    end

    # Runs `puppet agent -t` as node +certname+ with +facts+ (FACTER_ variables);
    # returns [stdout and stderr, status, the catalog it applied].
    def agent(certname, facts)
      agent_dir = path('agents', certname)
      %w[conf var run log code ssl].each { |d| FileUtils.mkdir_p(File.join(agent_dir, d)) }
      env = facts.map { |k, v| ["FACTER_#{k}", v.to_s] }.to_h
      cmd = ['puppet', 'agent', '--test', '--color', 'false', '--server', '127.0.0.1', '--serverport', @port.to_s,
             '--certname', certname, '--http_keepalive_timeout', '0', '--waitforcert', '0',
             '--confdir', File.join(agent_dir, 'conf'), '--vardir', File.join(agent_dir, 'var'),
             '--rundir', File.join(agent_dir, 'run'), '--logdir', File.join(agent_dir, 'log'),
             '--codedir', File.join(agent_dir, 'code'), '--ssldir', File.join(agent_dir, 'ssl')]
      output, status = capture(env, cmd, AGENT_TIMEOUT)
      catalog_file = File.join(agent_dir, 'var', 'client_data', 'catalog', "#{certname}.json")
      catalog = File.exist?(catalog_file) ? JSON.parse(File.read(catalog_file)) : nil
      [output, status, catalog]
    end

    # The message of the notify resource +title+ in a catalog.
    def self.notify_message(catalog, title)
      resource = catalog.fetch('resources').find { |r| r['type'] == 'Notify' && r['title'] == title }
      raise "no Notify[#{title}] in the catalog" unless resource

      resource.fetch('parameters').fetch('message')
    end

    private

    def write_config
      conf = path('conf.d')
      FileUtils.mkdir_p(conf)
      %w[auth.conf ca.conf metrics.conf web-routes.conf].each do |f|
        FileUtils.cp(File.join(SYSTEM_CONF, f), conf)
      end
      File.write(File.join(conf, 'global.conf'), "global: { logging-config: #{path('logback.xml')} }\n")
      File.write(File.join(conf, 'webserver.conf'), <<~CONF)
        webserver: {
          client-auth: want
          ssl-host: 127.0.0.1
          ssl-port: #{@port}
        }
      CONF
      File.write(File.join(conf, 'puppetserver.conf'), <<~CONF)
        jruby-puppet: {
          ruby-load-path: [/usr/lib/puppetserver/ruby/vendor_ruby]
          gem-home: #{path('jruby-gems')}
          gem-path: [#{path('jruby-gems')}, /usr/lib/puppetserver/vendored-jruby-gems]
          server-conf-dir: #{path('puppet')}
          server-code-dir: #{path('code')}
          server-var-dir: #{path('var')}
          server-run-dir: #{path('run')}
          server-log-dir: #{path('log')}
          max-active-instances: #{@instances}
        }
        http-client: {}
        profiler: { enabled: false }
      CONF
      File.write(path('logback.xml'), <<~XML)
        <configuration>
          <appender name="STDOUT" class="ch.qos.logback.core.ConsoleAppender">
            <encoder><pattern>%d %-5p [%t] [%c{2}] %m%n</pattern></encoder>
          </appender>
          <root level="info"><appender-ref ref="STDOUT"/></root>
        </configuration>
      XML
      %w[puppet code var run log jruby-gems].each { |d| FileUtils.mkdir_p(path(d)) }
      File.write(path('puppet', 'puppet.conf'), <<~CONF)
        [main]
        certname = 127.0.0.1
        ssldir = #{path('puppet', 'ssl')}
        cadir = #{path('puppet', 'ca')}
        [server]
        autosign = true
      CONF
    end

    # `puppetserver gem install`, into this server's gem home.
    def install_gem
      run(['puppetserver', 'gem', 'install', '--install-dir', path('jruby-gems'), '--local', '--no-document',
           @gem_file], 300)
    end

    def setup_ca
      run(['puppetserver', 'ca', 'setup', '--config', path('puppet', 'puppet.conf'), '--certname', '127.0.0.1',
           '--subject-alt-names', 'IP:127.0.0.1,DNS:localhost'], 120)
    end

    # The production environment: libkv installed from its module package
    # (`rake module:build`, tracked files only) with `puppet module install`, as
    # the README tells an admin; the test module; the test manifest.
    def install_code
      production = path('code', 'environments', 'production')
      modules = File.join(production, 'modules')
      FileUtils.mkdir_p(modules)
      run(['puppet', 'module', 'install', '--modulepath', modules, '--ignore-dependencies', '--color', 'false',
           @module_package], 120)
      unless File.file?(File.join(module_dir, 'lib', 'libkv.rb'))
        raise "the installed module has no lib/libkv.rb: #{module_dir}"
      end

      compiled = compiled_files
      raise "the installed module holds compiled code: #{compiled.join(', ')}" unless compiled.empty?

      FileUtils.cp_r(File.join(__dir__, 'modules', 'libkv_e2e'), modules)
      FileUtils.cp_r(File.join(__dir__, 'manifests'), production)
    end

    # What the server writes. The gem home stays root's, as `puppetserver gem
    # install` leaves it: the server must be able to read the library there.
    def own_by_puppet
      puppet = Etc.getpwnam('puppet')
      FileUtils.chown_R(puppet.uid, puppet.gid, [path('puppet'), path('code'), path('var'), path('run'), path('log')])
    end

    def spawn_server
      @pid = Process.spawn('setsid', 'puppetserver', 'foreground', '--config', path('conf.d'),
                           in: File::NULL, out: @log, err: %i[child out])
    end

    def wait_until_up
      deadline = monotonic + START_TIMEOUT
      until status_running?
        find_jvm
        raise "puppetserver exited before it answered: see #{tail_of_log}" if launcher_exited? && !jvm_alive?
        raise "puppetserver did not answer within #{START_TIMEOUT}s: #{tail_of_log}" if monotonic > deadline

        sleep 1
      end
      find_jvm
      raise "puppetserver answers, but no JVM of it was found below pid #{@pid}" unless @jvm
    end

    def status_running?
      http = Net::HTTP.new('127.0.0.1', @port)
      http.use_ssl = true
      http.ca_file = path('puppet', 'ca', 'ca_crt.pem')
      http.verify_mode = OpenSSL::SSL::VERIFY_PEER
      http.open_timeout = http.read_timeout = 5
      http.get('/status/v1/simple').body.to_s.strip == 'running'
    rescue SystemCallError, IOError, OpenSSL::SSL::SSLError, Net::OpenTimeout, Net::ReadTimeout
      false
    end

    def port_open?
      Socket.tcp('127.0.0.1', @port, connect_timeout: 2) { true }
    rescue SystemCallError, SocketError
      false
    end

    # The launcher is our child: reaped here, its status kept.
    def launcher_exited?
      return true if @launcher_status
      return false unless @pid

      done = Process.wait2(@pid, Process::WNOHANG)
      @launcher_status = done.last if done
      !done.nil?
    rescue Errno::ECHILD
      @launcher_status = :gone
      true
    end

    # After the JVM: the launcher (our child) and its process group (setsid made
    # @pid its leader: puppetserver's scripts and runuser). Once the JVM is gone
    # they exit by themselves, runuser reaping the JVM (CONT, should runuser have
    # stopped with a stopped JVM); what is left then gets TERM, then KILL. The
    # launcher is reaped.
    def stop_launcher
      return unless @pid

      [['CONT', 10], ['TERM', 10], ['KILL', 30]].each do |name, seconds|
        unless launcher_group.empty?
          begin
            Process.kill(name, -@pid)
          rescue Errno::ESRCH
            nil
          end
        end
        return if wait_until(seconds) { launcher_exited? && launcher_group.empty? }
      end
      raise "puppetserver's launcher (pid #{@pid}) or its process group did not exit: #{launcher_group.inspect}"
    end

    # The live processes of the launcher's process group.
    def launcher_group
      Dir.glob('/proc/[0-9]*').map { |dir| File.basename(dir).to_i }.select do |pid|
        stat = proc_stat(pid)
        stat && stat[2].to_i == @pid && stat[0] != 'Z'
      end
    end

    # Looks for the JVM, until found: a java process whose command line names
    # this server's conf.d (a temp dir of its own, so that no other JVM is ever
    # signalled) and that descends from the launcher (or is an orphan of it, once
    # the launcher has exited).
    def find_jvm
      return if @jvm || @pid.nil?

      config = path('conf.d')
      Dir.glob('/proc/[0-9]*').each do |dir|
        pid = File.basename(dir).to_i
        comm = read_proc(pid, 'comm')
        next unless comm && comm.strip == 'java'
        next unless read_proc(pid, 'cmdline').to_s.split("\0").include?(config)
        next unless descends_from?(pid, @pid) || launcher_exited?

        start_time = proc_stat(pid)&.at(19)
        @jvm = [pid, start_time] if start_time
        return
      end
    end

    def descends_from?(pid, ancestor)
      64.times do
        return true if pid == ancestor

        stat = proc_stat(pid)
        return false unless stat

        pid = stat[1].to_i
        return false if pid <= 1
      end
      false
    end

    # Whether the JVM runs: its PID is there with the start time it had (not a
    # PID reused since), and is not a zombie.
    def jvm_alive?
      return false unless @jvm

      stat = proc_stat(@jvm.first)
      !stat.nil? && stat[19] == @jvm.last && stat[0] != 'Z'
    end

    def signal_jvm(name)
      Process.kill(name, @jvm.first) if jvm_alive?
    rescue Errno::ESRCH
      nil
    end

    # The fields of /proc/PID/stat after the command (state, ppid, ...), or nil.
    def proc_stat(pid)
      stat = read_proc(pid, 'stat')
      stat && stat[(stat.rindex(')') + 2)..-1].split
    end

    def read_proc(pid, file)
      File.read("/proc/#{pid}/#{file}")
    rescue SystemCallError
      nil
    end

    # Polls the block until it is true or +seconds+ have passed; its last answer.
    def wait_until(seconds)
      deadline = monotonic + seconds
      loop do
        return true if yield
        return false if monotonic > deadline

        sleep 0.5
      end
    end

    def tail_of_log
      "the last lines of #{@log}:\n#{File.exist?(@log) ? File.readlines(@log).last(40).join : '(none)'}"
    end

    def run(cmd, timeout)
      output, status = capture({}, cmd, timeout)
      raise "#{cmd.first(3).join(' ')} failed (#{status}):\n#{output}" unless status.success?

      output
    end

    # Runs +cmd+ in a process group of its own, killed (the whole group) after
    # +timeout+ seconds; returns [stdout and stderr, status].
    def capture(env, cmd, timeout)
      Open3.popen2e(env, *cmd, pgroup: true) do |stdin, out, wait|
        stdin.close
        reader = Thread.new { out.read }
        unless wait.join(timeout)
          begin
            Process.kill('KILL', -wait.pid)
          rescue Errno::ESRCH
            nil
          end
          raise "#{cmd.first(3).join(' ')} did not finish within #{timeout}s:\n#{reader.value}"
        end
        [reader.value, wait.value]
      end
    end

    def monotonic
      Process.clock_gettime(Process::CLOCK_MONOTONIC)
    end
  end
end
