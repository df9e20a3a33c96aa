# frozen_string_literal: true

module LibKV
  VERSION = "0.1.0"
end
