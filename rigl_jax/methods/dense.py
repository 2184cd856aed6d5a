"""Dense training through the same code path (the baseline)."""

from rigl_jax.methods import base


class Dense(base.Method):
  """No sparse leaves, no masks: the inner optimizer runs unchanged."""
  name = 'dense'
  sparse = False
  dynamic = False
  training_cost = 'dense'


def dense() -> base.Method:
  return Dense()
