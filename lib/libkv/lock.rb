# frozen_string_literal: true

module LibKV
  # A lock this process took with LibKV::Store#newlock. The binding defines key,
  # owner, fence, ttl, held?, lost (why it was lost, or nil), unlock (raises
  # LibKV::LockLostError when it had been lost) and detach (stop renewing; the
  # store keeps it until its ttl passes or Store#unlock(key, owner) releases it).
  #
  # +fence+ is larger than every earlier acquisition's of the same key: stored
  # beside work done under the lock, it lets a later holder refuse an earlier
  # one's late writes.
  class Lock
    # @return [Hash] { "key" => String, "owner" => String, "fence" => Integer, "ttl" => Integer }
    def to_h
      { 'key' => key, 'owner' => owner, 'fence' => fence, 'ttl' => ttl }
    end

    def inspect
      "#<LibKV::Lock #{key} fence=#{fence} #{held? ? 'held' : 'not held'}>"
    end
    alias to_s inspect
  end
end
