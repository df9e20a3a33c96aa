# frozen_string_literal: true

module LibKV
  # Every error libkv raises.
  class Error < StandardError
    # @return [String, nil] the key the error is about, when it is about one
    attr_reader :key
  end

  # The call was wrong: a bad key, URL, value or option. Retrying cannot help.
  class InvalidArgumentError < Error; end

  # The key does not follow libkv's key rules.
  class InvalidKeyError < InvalidArgumentError; end

  # The store does not implement this operation.
  class UnsupportedError < Error; end

  # The store object was closed (LibKV::Store#close).
  class ClosedError < Error; end

  # The store failed to do what was asked. Puppet's softfail option turns these
  # (and only these) into warnings and safe return values.
  class StoreError < Error; end

  # The store holds something that makes this write impossible, such as a key
  # below another key in the file store.
  class ConflictError < StoreError; end

  # The store could not be reached.
  class ConnectionError < StoreError; end

  # The store did not answer within the timeout.
  class TimeoutError < ConnectionError; end

  # The store refused the credentials.
  class AuthError < StoreError; end

  # A lock was not taken within the timeout: another holder kept it.
  class LockTimeoutError < TimeoutError; end

  # A held lock was lost (not renewed within its ttl, or taken by another): work
  # done under it since may have overlapped another holder's.
  class LockLostError < StoreError; end
end
