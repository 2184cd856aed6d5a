"""Dense training through the same code path (the baseline)."""

from rigl_jax.methods import base


def dense() -> base.MaskMethod:
  """No sparse leaves, no masks: the inner optimizer runs unchanged."""
  return base.MaskMethod(name='dense', kind='dense')
