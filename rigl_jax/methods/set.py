"""SET: Sparse Evolutionary Training (Mocanu et al., Nature Comms 2018).

Drops the smallest-magnitude active weights and regrows as many connections
uniformly at random.
"""

import jax

from rigl_jax.methods import base


def random_scores(weight, grad, aux, key):
  """Uniform random scores: growth at random among the inactive positions."""
  del grad, aux
  return jax.random.uniform(key, weight.shape)


def set_method() -> base.Method:
  """Random regrowth."""
  return base.DropAndGrow('set', random_scores, training_cost='sparse')
