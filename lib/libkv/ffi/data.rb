# frozen_string_literal: true

# Ruby values as the C ABI library takes them, and back: the envelope's DATA JSON
# (see crates/libkv-ffi/src/lib.rs), for lib/libkv/ffi.rb.

module LibKV
  # Ruby values to envelope DATA and back, as ext/libkv/src/convert.rs converts
  # them on MRI: the same types, the same refusals.
  module Data
    MAX_DEPTH = 100 # codec::MAX_DEPTH
    INT_RANGE = (-2**63..2**63 - 1).freeze
    PTYPE = '__ptype'
    PVALUE = '__pvalue'

    # Why a value cannot be stored: a kind and its detail, which the library words
    # (LIBKV_VALUE_REFUSED in crates/libkv-ffi), as the MRI binding's refusals are.
    class Refusal < StandardError
      attr_reader :parts

      def initialize(*parts)
        @parts = parts
        super(parts.first)
      end
    end

    class << self
      # The DATA JSON of +value+; raises Refusal.
      def generate(value)
        state = { nonfinite: nil }
        tree = to_data(value, 0, state)
        if state[:nonfinite]
          raise Refusal.new('non-finite', float_name(state[:nonfinite]))
        end

        ::JSON.generate(tree, max_nesting: false)
      end

      # The Ruby value of DATA JSON.
      def parse(json)
        value = ::JSON.parse(json, max_nesting: false, create_additions: false)
        json.include?('"__ptype"') ? untag(value) : value
      end

      # Whether +v+ is, or holds at any depth, a binary String; true deeper than a
      # value can be stored, so that the caller's own walk decides.
      def binary_inside?(v, depth)
        return v.encoding == Encoding::BINARY if v.is_a?(String)
        return true if depth > MAX_DEPTH

        case v
        when Array then v.any? { |item| binary_inside?(item, depth + 1) }
        when Hash then v.any? { |k, item| binary_inside?(k, depth + 1) || binary_inside?(item, depth + 1) }
        else false
        end
      end

      private

      def to_data(v, depth, state)
        case v
        when nil, true, false then v
        when String then string(v)
        when Integer
          raise Refusal, 'integer-range' unless INT_RANGE.cover?(v)

          v
        when Float
          state[:nonfinite] ||= v unless v.finite?
          v
        when Array
          inner = nest(depth)
          v.map { |item| to_data(item, inner, state) }
        when Hash then hash_data(v, nest(depth), state)
        when Symbol then v.to_s
        else
          raise Refusal.new('class', v.class.name || v.class.inspect)
        end
      end

      def hash_data(v, depth, state)
        pairs = v.map { |k, item| [to_data(k, depth, state), to_data(item, depth, state)] }
        if pairs.all? { |k, _| k.is_a?(String) && k != PTYPE }
          pairs.to_h
        else
          { PTYPE => 'Hash', PVALUE => pairs.flatten(1) }
        end
      end

      def nest(depth)
        return depth + 1 if depth < MAX_DEPTH

        raise Refusal, 'too-deep'
      end

      def string(s)
        return { PTYPE => 'Binary', PVALUE => [s].pack('m0') } if s.encoding == Encoding::BINARY

        unless s.encoding == Encoding::UTF_8 || s.encoding == Encoding::US_ASCII
          begin
            s = s.encode(Encoding::UTF_8)
          rescue EncodingError => e
            raise Refusal.new('not-convertible', e.message)
          end
        end
        raise Refusal, 'not-utf8' unless s.valid_encoding?

        s
      end

      # A non-finite Float as the library reads it.
      def float_name(f)
        return 'NaN' if f.nan?

        f.positive? ? 'inf' : '-inf'
      end

      def untag(v)
        case v
        when Array then v.map! { |item| untag(item) }
        when Hash
          case v[PTYPE]
          when nil then v.each { |k, item| v[k] = untag(item) }
          when 'Binary' then v[PVALUE].unpack1('m0')
          else
            v[PVALUE].each_slice(2).each_with_object({}) { |(k, item), h| h[untag(k)] = untag(item) }
          end
        else v
        end
      end
    end
  end
end
