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


def set_method(grow_init: str = 'zeros',
               noise_std: float = base.DROP_NOISE_STD) -> base.Method:
  """Random regrowth.

  Args:
    grow_init: what new connections start at (`base.GROW_INITS`).
    noise_std: std of the noise on the drop scores (`base.DropAndGrow`).

  Returns:
    The method.
  """
  return base.DropAndGrow('set', random_scores, training_cost='sparse',
                          grow_init=grow_init, noise_std=noise_std)
