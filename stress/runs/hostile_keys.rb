# frozen_string_literal: true

# Hostile keys and paths. The core's fuzzer (crates/libkv-stress, seeded, 100,000
# cases) checks key validation against an independent statement of the rule and
# runs every operation of the file store with symbolic links, hard links and
# FIFOs planted inside the root pointing outside, and the root itself replaced by
# a symbolic link: no panic, nothing outside the root created, changed or read;
# half the cases with the file store's one-call openat2 reads, half walking paths.
# Then, through the Ruby API, random keys in random encodings (and non-Strings):
# each is refused as DESIGN.md's rule says, with the exception the API promises.
module Stress
  # DESIGN.md's key rule, stated again without the core: what a key given to the
  # Ruby API must be (its text in UTF-8).
  module KeyRule
    module_function

    def text(key)
      return nil unless key.is_a?(String)

      utf8 = [Encoding::BINARY, Encoding::UTF_8, Encoding::US_ASCII].include?(key.encoding) ? key.b : key.encode('UTF-8').b
      utf8.force_encoding('UTF-8').valid_encoding? ? utf8.force_encoding('UTF-8') : :not_text
    rescue EncodingError
      :not_text
    end

    def valid?(text, dir)
      return false unless text.is_a?(String) && text.bytesize <= 1024
      return true if dir && text == '/'

      text = text.chomp('/') if dir && text.size > 1
      return false unless text.match?(%r{\A/[A-Za-z0-9._:\-/]*\z})

      parts = text[1..].split('/', -1)
      !parts.empty? && parts.none? { |p| p.empty? || p == '.' || p == '..' || p.bytesize > 255 }
    end
  end
end

Stress.define('hostile-keys', 'a seeded fuzzer over key validation and the file store; random keys through the Ruby API') do |run, random|
  cases = Stress.quick? ? 20_000 : 100_000
  binary = File.join(Stress::TARGET, 'release', 'libkv-stress')
  if File.executable?(binary)
    # The file store reads a key in one openat2 where the kernel has it, and walks
    # the path otherwise: the fuzzer runs each way, half the cases each.
    { 'openat2' => {}, 'walk' => { 'LIBKV_FILE_OPENAT2' => '0' } }.each do |way, env|
      out, status = Open3.capture2e(env, binary, 'hostile-keys', '--cases', (cases / 2).to_s, '--seed', run.seed.to_s)
      out.lines.each { |l| run.say("core (#{way}): #{l.chomp}") unless l.start_with?('SUMMARY') }
      summary = out[/^SUMMARY hostile-keys cases=(\d+) failures=(\d+)$/]
      run.check(status.success? && summary, "the core's fuzzer (#{way}) failed (exit #{status.exitstatus.inspect})")
      next unless summary

      run.tally(Regexp.last_match(1).to_i - 1, [])
      Regexp.last_match(2).to_i.times { |i| run.fail!("core fuzzer (#{way}) failure #{i + 1} (see its output above)") }
    end
  else
    run.fail!("#{binary} is missing: build it with `cargo build --release -p libkv-stress` (rake stress does)")
  end

  # Through the Ruby API: the mock store answers exactly as the rule says; the
  # file store too, or refuses a path it will not follow (a planted link) or a key
  # below a key, and never touches the directory outside.
  dir = Stress.tmpdir('hostile-keys')
  outside = File.join(dir, 'outside')
  FileUtils.mkdir_p(outside)
  File.write(File.join(outside, 'secret'), 'outside data')
  root = File.join(dir, 'root')
  FileUtils.mkdir_p(root)
  File.symlink(outside, File.join(root, 'evil'))
  stores = { 'mock' => LibKV.open('mock://hostile'), 'file' => LibKV.open("file://#{root}") }
  good = ['a', 'b', 'evil', 'secret', '...', 'x.y', 'A-Z_0:9', '-', ':', 'n' * 255]
  bad = ['.', '..', '', "\0", ' ', "\n", '@', '.libkv@lock', '%2e%2e', '\\', "\u00e9", "\u{1F600}", 'n' * 256, '~', '*',
         '?', '#', "\xff".b]
  encodings = [Encoding::UTF_8, Encoding::BINARY, Encoding::UTF_16LE, Encoding::ISO_8859_1, Encoding::US_ASCII]
  ops = {
    'get' => [false, ->(s, k) { s.get(k) }], 'put' => [false, ->(s, k) { s.put(k, 'v') }],
    'delete' => [false, ->(s, k) { s.delete(k) }], 'exists' => [false, ->(s, k) { s.exists(k) }],
    'atomic_create' => [false, ->(s, k) { s.atomic_create(k, 'v') }],
    'atomic_put' => [false, ->(s, k) { s.atomic_put(k, 'v', 0) }],
    'list' => [true, ->(s, k) { s.list(k) }], 'deletetree' => [true, ->(s, k) { s.deletetree(k) }],
    'atomic_list' => [true, ->(s, k) { s.atomic_list(k) }]
  }
  ruby_cases = Stress.quick? ? 5_000 : 50_000
  outcomes = Hash.new(0)
  through = 0
  replanted = 0
  link = File.join(root, 'evil')
  # Nothing outside the root created, changed or removed (and the planted link
  # in place, unless +linked+ is false).
  outside_intact = lambda do |label, linked = true|
    entries = Dir.children(outside)
    run.check(entries == ['secret'] && File.read(File.join(outside, 'secret')) == 'outside data',
              "#{label} the directory outside the root holds #{entries.inspect}")
    run.check(File.symlink?(link) && File.readlink(link) == outside, "#{label} the planted link #{link} is gone") if linked
  end
  ruby_cases.times do |n|
    key =
      if random.rand(50).zero?
        [1, nil, :'/a', ['/a'], 1.5, { '/a' => 1 }].sample(random: random)
      else
        raw = Array.new(random.rand(1..6)) { (random.rand(4).zero? ? bad : good).sample(random: random).b }.join('/')
        raw = "/#{raw}".b unless random.rand(10).zero?
        raw += '/' if random.rand(8).zero?
        text = raw.dup.force_encoding(Encoding::UTF_8)
        encoding = encodings.sample(random: random)
        if encoding == Encoding::BINARY || !text.valid_encoding?
          encoding == Encoding::BINARY ? raw : text
        else
          begin
            text.encode(encoding)
          rescue EncodingError
            text
          end
        end
      end
    op, (dir, call) = ops.to_a.sample(random: random)
    text = Stress::KeyRule.text(key)
    valid = Stress::KeyRule.valid?(text, dir)
    # A valid key whose path goes through the planted link /evil (a symbolic link
    # to the directory outside the root): the file store must refuse it. The link
    # itself, /evil, is refused too, except by delete, which removes the link (as
    # the README says), never what it points to.
    path = valid ? text.sub(%r{(?<=.)/\z}, '') : ''
    through_link = path.start_with?('/evil/')
    at_link = path == '/evil'
    stores.each do |name, store|
      returned = nil
      outcome =
        begin
          returned = call.call(store, key)
          :ok
        rescue LibKV::InvalidKeyError => e
          shown = text.is_a?(String) ? text.inspect[1..-2].gsub('\\u0000', '\\0') : nil
          shown.nil? || e.message.include?(shown) || text.to_s.include?("\0") ? :invalid : :invalid_unnamed
        rescue LibKV::StoreError => e
          e.message.match?(/symbolic link|cannot keep a key below another key|cannot keep a value at a key|holds a value/) ? :refused : e
        rescue ArgumentError => e
          e.message.match?(/\A(key|dir) must be a String/) ? :not_a_string : e
        rescue StandardError => e
          e
        end
      outcomes["#{name} #{outcome.is_a?(Symbol) ? outcome : 'other'}"] += 1
      expected = if !key.is_a?(String) then [:not_a_string]
                 elsif !valid then [:invalid]
                 elsif name == 'file' && (through_link || (at_link && op != 'delete')) then [:refused]
                 elsif name == 'file' && at_link then [:ok]
                 elsif name == 'file' then %i[ok refused]
                 else [:ok]
                 end
      leaked = name == 'file' && returned.inspect.include?('outside data')
      run.check(expected.include?(outcome) && !leaked,
                "#{name} #{op}(#{key.inspect[0, 80]}): expected #{expected.join(' or ')}, got #{outcome.inspect[0, 200]}" \
                "#{leaked ? ', returning the data outside the root' : ''}")
      through += 1 if name == 'file' && (through_link || at_link)
    end
    # delete('/evil') or a deletetree above it removed the link itself: plant it
    # again, once sure nothing outside changed, so that later keys meet it too.
    unless File.symlink?(link)
      outside_intact.call("after #{op}(#{key.inspect[0, 80]}) removed the planted link,", false)
      FileUtils.rm_rf(link)
      File.symlink(outside, link)
      replanted += 1
    end
    outside_intact.call("after #{n + 1} keys") if ((n + 1) % 1000).zero? || n + 1 == ruby_cases
  end
  run.say("Ruby API: #{ruby_cases} random keys on the mock and file stores: #{outcomes.sort.map { |k, v| "#{k} #{v}" }.join(', ')}; " \
          "#{through} valid keys at or through the planted link /evil on the file store (the link removed by " \
          "delete or deletetree and planted again #{replanted} times)")
end
