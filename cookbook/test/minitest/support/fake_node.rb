# frozen_string_literal: true

# What the cookbook's libraries use of a Chef node: attributes by string
# key, the node name and the run's run_state. Real Chef nodes answer the
# same three; only a Chef run shows the rest.
class FakeNode
  attr_reader :name, :run_state

  def initialize(name, attributes)
    @name = name
    @attributes = attributes
    @run_state = {}
  end

  def [](key)
    @attributes[key]
  end
end

# A recipe-like object: the DSL mixed into something that has `node`.
class FakeRecipe
  include Convergent::DSL
  attr_reader :node

  def initialize(node)
    @node = node
  end
end
