# frozen_string_literal: true

module Stress
  class << self
    def monotonic
      Process.clock_gettime(Process::CLOCK_MONOTONIC)
    end

    # Sends +signal+ to the process group led by +pid+, if any is left.
    def signal_group(signal, pid)
      Process.kill(signal, -pid)
    rescue Errno::ESRCH
      nil
    end

    # Waits for the child processes +pids+ at most +timeout+ seconds, then kills
    # what is left. Returns pid => Process::Status (nil for the ones killed at
    # the deadline).
    def wait_all(pids, timeout)
      deadline = monotonic + timeout
      statuses = {}
      until (pids - statuses.keys).empty? || monotonic > deadline
        (pids - statuses.keys).each do |pid|
          done, status = Process.wait2(pid, Process::WNOHANG)
          statuses[done] = status if done
        end
        sleep 0.01
      end
      (pids - statuses.keys).each do |pid|
        Process.kill('KILL', pid)
        Process.wait(pid)
        statuses[pid] = nil
      end
      statuses
    end
  end
end
