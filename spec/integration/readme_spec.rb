# frozen_string_literal: true

require 'spec_helper'
require 'open3'
require 'yaml'

# The README's examples, run as they stand in README.md: the Usage block with a
# real `puppet apply` (real Facter facts, $trusted), and the Ruby API block, whose
# every `# =>` is checked.
RSpec.describe 'README.md' do
  include LibKVTest::PuppetApply

  root = File.expand_path('../..', __dir__)
  readme = File.read(File.join(root, 'README.md'))

  # The first ```LANG block of the section HEADING (a "## " heading).
  block = lambda do |heading, lang|
    section = readme.split(/^## /).find { |s| s.start_with?("#{heading}\n") }
    raise "README.md has no section '## #{heading}'" unless section

    section[/^```#{lang}\n(.*?)^```$/m, 1] or raise "README.md's '## #{heading}' has no #{lang} block"
  end

  # +code+ with each line that has "# =>" turned into a check that what it
  # evaluates to is what it shows.
  def checked_script(code)
    code.lines.map do |line|
      expr, shown = line.chomp.split(/\s+# => /, 2)
      next line unless shown

      shown = shown.sub(/;.*\z/, '')
      "__r = (#{expr}); (__r.inspect == #{shown.strip.inspect}) or abort(%(#{expr.strip}: \#{__r.inspect}))\n"
    end.join
  end

  it 'the Usage block runs with puppet apply, and facts and $trusted come back as the text they are' do
    usage = block.call('Usage', 'puppet')
    checks = <<~'PP'
      # Appended by the test: what the block read back is what it stored.
      unless $primary == $trusted['certname'] and $primary =~ String {
        fail("primary: ${primary} (${type($primary)}), not ${trusted['certname']}")
      }
      unless $hosts[$trusted['certname']] == $facts['networking']['ip'] {
        fail("hosts: ${hosts}")
      }
      unless $port == 8080 and $port =~ Integer and $stored == true {
        fail("port ${port}, stored ${stored}")
      }
      unless $elsewhere == undef and $named == undef { fail("elsewhere ${elsewhere}, named ${named}") }
      notice("readme: primary ${primary}, hosts ${hosts}")
    PP
    manifest = File.join(tmp, 'usage.pp')
    File.write(manifest, usage + checks)
    out, err, status = puppet_apply_file(root, manifest)
    expect(status).to be_success, err
    expect(out).to include('readme: primary ')
    certname = out[/readme: primary (\S+),/, 1]
    # The bytes in the default store are the plain text of the certname and ip.
    autofiles = File.join(puppet_vardir_of, 'simp', 'environments', 'production', 'simp_autofiles')
    expect(File.binread(File.join(autofiles, 'app', 'primary'))).to eq(certname)
    ip = File.binread(File.join(autofiles, 'app', 'hosts', certname))
    expect(ip).to match(/\A[0-9a-f.:]+\z/)
    expect(File.read(File.join(autofiles, 'app', 'port'))).to eq('{"libkv":1,"value":8080}')
    expect(File.read(File.join(autofiles, 'app', 'counter'))).to eq('{"libkv":1,"value":1}')
  end

  it 'the locks block runs with puppet apply: the node registered for a while, one server ID per node, kept' do
    code = block.call('Locks and keys that expire', 'puppet')
    checks = <<~'PP'
      # Appended by the test.
      unless $nodes[$trusted['certname']] == $facts['networking']['ip'] { fail("nodes: ${nodes}") }
      unless $server_id =~ Integer and $server_id >= 1 { fail("server id ${server_id}") }
      notice("readme locks: server id ${server_id}")
    PP
    manifest = File.join(tmp, 'locks.pp')
    File.write(manifest, code + checks)
    ids = Array.new(2) do
      out, err, status = puppet_apply_file(root, manifest)
      expect(status).to be_success, err
      out[/readme locks: server id (\d+)/, 1]
    end
    expect(ids).to eq(%w[1 1])
    autofiles = File.join(puppet_vardir_of, 'simp', 'environments', 'production', 'simp_autofiles')
    # The lock was released (the file store removes the directories it empties).
    expect(File.exist?(File.join(autofiles, 'locks', 'server-ids'))).to be(false)
    certname = Dir.children(File.join(autofiles, 'app', 'nodes')).first
    expiry = File.read(File.join(autofiles, '.libkv@expiry'))
    # The registry entry's line (a released lock's may stay until its own deadline).
    line = expiry.lines.find { |l| l.end_with?(" /app/nodes/#{certname}\n") }
    expect(line).to match(/\A\d+ \d+ /), expiry
    deadline_ms = line.split[1].to_i
    expect(deadline_ms / 1000.0 - Time.now.to_f).to be_within(120).of(7200)
  end

  it 'the watches block runs with puppet apply, waiting until another process publishes' do
    code = block.call('Watches', 'puppet')
    checks = <<~'PP'
      # Appended by the test.
      notice("readme watches: ${db['value']} ${published.keys}")
    PP
    manifest = File.join(tmp, 'watches.pp')
    File.write(manifest, code + checks)
    vardir = puppet_vardir_of
    writer = Thread.new do
      sleep 4
      store = LibKV.open('legacy-simp6://', vardir: vardir, environment: 'production')
      store.put('/app/db/address', '10.0.0.5')
    end
    out, err, status = puppet_apply_file(root, manifest)
    writer.join
    expect(status).to be_success, err
    expect(out).to include('readme watches: 10.0.0.5 [address]')
  end

  it 'the watches Ruby block runs, and every "# =>" in it holds' do
    code = block.call('Watches', 'ruby')
    expect(code.lines.count { |l| l.include?('# =>') }).to be >= 4
    out, err, status = ruby_process(checked_script(code))
    expect(status).to be_success, err
    expect(out).to eq('')
  end

  it "the sample error messages are libkv's own" do
    samples = block.call('Usage', 'text').lines.map(&:chomp)
    expect(samples.size).to eq(2)
    # A store whose root the user running Puppet may not write. Root may write
    # anything: it runs without that power (CAP_DAC_OVERRIDE) here.
    store = File.join(tmp, 'libkv')
    FileUtils.mkdir_p(store)
    File.chmod(0o555, store)
    powerless = Process.uid.zero? ? ['setpriv', '--bounding-set=-dac_override,-dac_read_search', '--'] : []
    # Puppet makes its own directories (some owned by its service user) at the
    # first run: one with all powers first.
    File.write(File.join(tmp, 'nothing.pp'), '')
    expect(puppet_apply_file(root, File.join(tmp, 'nothing.pp')).last).to be_success
    {
      samples[0] => "libkv::put('/app/port', 8080, { 'url' => 'file://#{store}' })",
      samples[1] => "libkv::get('/app port')",
    }.each do |sample, code|
      manifest = File.join(tmp, 'error.pp')
      File.write(manifest, code)
      _, err, status = puppet_apply_file(root, manifest, {}, '', powerless)
      expect(status).not_to be_success
      expect(err).to include(sample.sub('file:///var/lib/libkv', "file://#{store}"))
    end
  end

  it 'the Ruby API block runs, and every "# =>" in it holds' do
    code = block.call('The Ruby API', 'ruby')
    checked = code.lines.count { |l| l.include?('# =>') }
    expect(checked).to be >= 5
    script = checked_script(code)
    script += "store.get('/app/port') rescue (puts 'closed: ' + $!.class.name)\n"
    out, err, status = ruby_process(script)
    expect(status).to be_success, err
    expect(out).to eq("closed: LibKV::ClosedError\n")
  end

  it "the Hiera backend's hiera.yaml runs with puppet apply: per-node, then shared, then YAML data" do
    dir = File.join(tmp, 'hiera')
    FileUtils.mkdir_p(File.join(dir, 'data'))
    File.write(File.join(dir, 'hiera.yaml'), block.call('Hiera backend', 'yaml'))
    url = "file://#{tmp}/store"
    File.write(File.join(dir, 'data', 'common.yaml'),
               YAML.dump('libkv::url' => url, 'app::port' => 3, 'app::label' => 'yaml', 'app::peers' => ['yaml']))
    store = LibKV.open(url)
    store.put('/hiera/nodes/web01.example.com/app::port', 8080)
    store.put('/hiera/common/app::port', 8000)
    store.put('/hiera/common/app::label', 'common')
    manifest = File.join(tmp, 'app.pp')
    File.write(manifest, <<~PUPPET)
      class app(Integer $port, String $label, Array $peers) { notice("app: ${port} ${label} ${peers}") }
      include app
    PUPPET
    { 'web01.example.com' => 'app: 8080 common [yaml]', 'db01.example.com' => 'app: 8000 common [yaml]' }
      .each do |certname, expected|
      out, err, status = puppet_apply_file(root, manifest, {}, '', [],
                                           args: ['--certname', certname, '--hiera_config', File.join(dir, 'hiera.yaml')])
      expect(status).to be_success, err
      expect(out).to include(expected)
    end
  end

  it "the libkv command's migration block moves legacy-simp6 and simpkv data into etcd as written" do
    script = block.call('The libkv command', 'shell')
    autofiles = File.join(tmp, 'vardir', 'simp', 'environments', 'production', 'simp_autofiles')
    FileUtils.mkdir_p(File.join(autofiles, 'gen_passwd'))
    File.write(File.join(autofiles, 'gen_passwd', 'web01'), 'Q9x!secret')
    simpkv = File.join(tmp, 'simpkv')
    FileUtils.mkdir_p(File.join(simpkv, 'globals', 'app'))
    File.write(File.join(simpkv, 'globals', 'app', 'port'), '{"value":8080,"metadata":{"by":"admin"}}')
    auth = File.join(tmp, 'etcd.yaml')
    File.write(auth, "--- {}\n")
    File.chmod(0o600, auth)
    etcd = LibKVTest::Etcd.server(:plain).url(LibKVTest::Etcd.unique_prefix)
    # Only the site's values change: the lines that set them.
    settings = { 'VARDIR' => File.join(tmp, 'vardir'), 'SIMPKV' => simpkv, 'ETCD' => etcd,
                 'export LIBKV_TO_AUTH_FILE' => auth }
    settings.each do |name, value|
      expect(script).to match(/^#{name}=/)
      script = script.sub(/^#{name}=.*$/, "#{name}=#{value}")
    end
    lib = LibKVTest.checkout_lib
    path = lib ? "#{File.join(root, 'exe')}:#{ENV.fetch('PATH')}" : ENV.fetch('PATH')
    out, err, status = Open3.capture3({ 'PATH' => path }, 'bash', '-e', '-c', script)
    expect(status).to be_success, err
    expect(out).to eq("/gen_passwd/web01\n/globals/app/port\n")
    expect(err.scan('verified: every key of the source is in the destination').size).to eq(2), err
    expect(err).to include('1 simpkv keys had metadata, which libkv does not keep')
    expect(LibKV.open(etcd).get('/gen_passwd/web01')).to eq('Q9x!secret')
    expect(LibKV.open("#{etcd}/simpkv").get('/globals/app/port')).to eq(8080)
  end

  it "the SQLite store's table is the one documented, and its sqlite3 command reads a value and skips an expired one" do
    section = readme[/^### The SQLite store\n(.*?)(?=^##)/m, 1] or raise "README.md has no section '### The SQLite store'"
    documented = section[/^ *```sql\n(.*?)^ *```$/m, 1] or raise 'no sql block'
    command = section[/^ *```sh\n(.*?)^ *```$/m, 1] or raise 'no sh block'
    db = File.join(tmp, 'libkv.db')
    store = LibKV.open("sqlite://#{db}")
    store.put('/app/password', 'Q9x!secret')
    store.put('/app/old', 'gone', ttl: 1)
    # The documented columns, in order, are the table's (comments and spacing aside).
    columns = ->(sql) { sql.gsub(/--[^\n]*/, '')[/CREATE TABLE kv \((.*?)\);/m, 1].split(',').map { |c| c.split.join(' ') } }
    schema, err, status = Open3.capture3('sqlite3', db, '.schema kv')
    expect(status).to be_success, err
    expect(columns.call(schema)).to eq(columns.call(documented))
    # The command as written, on this database: the path is the only change.
    expect(command).to include('/var/lib/puppet/libkv.db')
    script = command.gsub(/^ +/, '').gsub('/var/lib/puppet/libkv.db', db)
    out, err, status = Open3.capture3('bash', '-e', '-c', script)
    expect(status).to be_success, err
    expect(out).to eq("Q9x!secret\n")
    sleep 1.1
    out, = Open3.capture3('bash', '-e', '-c', script.sub('/app/password', '/app/old'))
    expect(out).to eq('')
    store.close
  end
end
