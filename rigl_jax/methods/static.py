"""Static sparse training: the initial mask never changes."""

from rigl_jax.methods import base


def static() -> base.MaskMethod:
  """A fixed random (or given) mask for the whole run."""
  return base.MaskMethod(name='static', kind='static')
