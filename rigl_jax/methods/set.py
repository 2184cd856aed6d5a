"""SET: Sparse Evolutionary Training (Mocanu et al., Nature Comms 2018).

Drops the smallest-magnitude active weights and regrows as many connections
uniformly at random.
"""

import jax

from rigl_jax.methods import base


def _random_scores(param, grad, aux, key):
  del grad, aux
  return jax.random.uniform(key, param.shape)


def set_method() -> base.MaskMethod:
  """Random regrowth."""
  return base.MaskMethod(name='set', kind='dst', grow_score=_random_scores)
