"""SNFS: Sparse Networks From Scratch (Dettmers & Zettlemoyer, 2019).

Grows where the momentum of the dense gradient (an exponential moving average,
updated on every step) is largest. With ``redistribute``, the regrowth budget
is shared across layers in proportion to each layer's mean momentum magnitude
over its active weights, as in the paper's sparse momentum; per-layer
densities then change while the total stays fixed.

The average is the reference's: google-research/rigl
rigl/sparse_optimizers.py, `SparseMomentumOptimizer`, whose
``_before_apply_gradients`` applies an ``ExponentialMovingAverage(decay=
momentum)`` to the gradients of the masked weights (dense gradients) before
every weight update. So SNFS reads and writes one float32 array per sparse
weight on every step, mask update or not: its step costs more than the
other methods' (`benchmarks/sparse_step.py`).
"""

from typing import Any

import jax.numpy as jnp

from rigl_jax import masks as masks_lib
from rigl_jax.mask_update import redistribute_counts  # pylint: disable=unused-import
from rigl_jax.methods import base


def momentum_scores(weight, grad, aux, key):
  """|EMA of the dense gradient|."""
  del weight, grad, key
  return jnp.abs(aux)


class SNFS(base.DropAndGrow):
  """Drop-and-grow by gradient momentum, with an EMA kept on every step."""

  def __init__(self, momentum: float = 0.9, redistribute: bool = False,
               grow_init: str = 'zeros',
               noise_std: float = base.DROP_NOISE_STD):
    if not 0.0 <= momentum < 1.0:
      raise ValueError(f'snfs momentum must be in [0, 1); got {momentum}')
    super().__init__('snfs', momentum_scores, redistribute,
                     training_cost='dense_gradient', grow_init=grow_init,
                     noise_std=noise_std)
    self.momentum = float(momentum)

  def init_aux(self, params: Any, masks: Any) -> Any:
    return masks_lib.map_masked(
        lambda m, p: None if m is None else jnp.zeros(p.shape, jnp.float32),
        masks, params)

  def update_aux(self, aux: Any, grads: Any, masks: Any) -> Any:
    b = self.momentum
    return masks_lib.map_masked(
        lambda m, e, g: None if m is None else
        b * e + (1.0 - b) * g.astype(jnp.float32), masks, aux, grads)


def snfs(snfs_momentum: float = 0.9, snfs_redistribution: bool = False,
         grow_init: str = 'zeros',
         noise_std: float = base.DROP_NOISE_STD) -> base.Method:
  """Momentum regrowth.

  Args:
    snfs_momentum: the EMA decay of the dense gradients.
    snfs_redistribution: share regrowth across layers by mean momentum
      magnitude.
    grow_init: what new connections start at (`base.GROW_INITS`).
    noise_std: std of the noise on the drop scores (`base.DropAndGrow`).

  Returns:
    The method.
  """
  return SNFS(snfs_momentum, snfs_redistribution, grow_init, noise_std)
