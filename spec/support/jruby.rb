# frozen_string_literal: true

# Under JRuby (`rake spec:jruby`), the specs run through the C ABI binding. JRuby
# cannot fork, so the examples tagged fork: true are reported as pending there,
# never counted as passed; they run under MRI.
if RUBY_ENGINE == 'jruby'
  RSpec.configure do |c|
    c.before(:each, fork: true) { skip 'JRuby has no fork (these run under MRI)' }
  end
end
