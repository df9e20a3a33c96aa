# frozen_string_literal: true

module Stress
  class << self
    # Every Ruby API operation, as [name, lambda(store)], with arguments that work
    # on any store: what the outage and fork runs call.
    def every_operation(key = '/stress/op')
      previous = { 'value' => nil, 'sequence' => 1 }
      [
        ['get', ->(s) { s.get(key) }],
        ['put', ->(s) { s.put(key, 'v') }],
        ['delete', ->(s) { s.delete(key) }],
        ['exists', ->(s) { s.exists(key) }],
        ['list', ->(s) { s.list('/stress') }],
        ['deletetree', ->(s) { s.deletetree('/stress/tree') }],
        ['atomic_create', ->(s) { s.atomic_create(key, 'v') }],
        ['atomic_get', ->(s) { s.atomic_get(key) }],
        ['atomic_put', ->(s) { s.atomic_put(key, 'v', previous) }],
        ['atomic_delete', ->(s) { s.atomic_delete(key, previous) }],
        ['atomic_list', ->(s) { s.atomic_list('/stress') }],
        ['info', ->(s) { s.info }],
      ]
    end
  end
end
