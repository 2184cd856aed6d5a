"""Static sparse training: the initial mask never changes."""

from rigl_jax.methods import base


class Static(base.Method):
  """A fixed random (or given) mask for the whole run."""
  name = 'static'
  dynamic = False


def static() -> base.Method:
  return Static()
