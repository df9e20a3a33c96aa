# frozen_string_literal: true

require 'zlib'

module Stress
  # The values of the crash run: the writer's generation +gen+ of key number +i+.
  # Each is a header naming (i, gen, length) and a filler that depends on both, so
  # a value read back is either exactly one generation's value or detectably not.
  # Lengths go from a few bytes to 1 MiB: one value in a hundred is 1 MiB, the rest
  # spread over powers of two up to 64 KiB.
  module CrashValue
    MAX = 1 << 20

    def self.key(i)
      "/crash/k#{i}"
    end

    def self.length(i, gen)
      h = Zlib.crc32("#{i}/#{gen}")
      return MAX if (h % 100).zero?

      bits = (h >> 8) % 17
      [(1 << bits) + ((h >> 13) % (1 << bits)), 1 << 16].min
    end

    def self.make(i, gen)
      n = length(i, gen)
      header = "crash #{i} #{gen} #{n}\n"
      filler = format('%08x%08x', Zlib.crc32("#{i}"), Zlib.crc32("#{gen}/#{i}"))
      header + (filler * ((n / filler.size) + 1))[0, n]
    end

    # The generation a value read back claims to be, or nil when it has no header.
    def self.generation(value)
      m = /\Acrash (\d+) (\d+) (\d+)\n/.match(value.to_s)
      m && m[2].to_i
    end
  end
end
