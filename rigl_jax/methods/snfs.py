"""SNFS: Sparse Networks From Scratch (Dettmers & Zettlemoyer, 2019).

Grows where the momentum of the dense gradient (an exponential moving average,
updated on every step) is largest. With ``redistribute``, the regrowth budget
is shared across layers in proportion to each layer's mean momentum magnitude
over its active weights, as in the paper's sparse momentum; per-layer
densities then change while the total stays fixed.
"""

from typing import Any

import jax
import jax.numpy as jnp

from rigl_jax import masks as masks_lib
from rigl_jax.methods import base


def _momentum_scores(param, grad, aux, key):
  del param, grad, key
  return jnp.abs(aux)


def snfs(momentum: float = 0.9, redistribute: bool = False) -> base.MaskMethod:
  """Momentum regrowth.

  Args:
    momentum: the EMA decay of the dense gradients.
    redistribute: share regrowth across layers by mean momentum magnitude.

  Returns:
    The method.
  """
  if not 0.0 <= momentum < 1.0:
    raise ValueError(f'snfs momentum must be in [0, 1); got {momentum}')

  def init_aux(params: Any, masks: Any) -> Any:
    return masks_lib.map_masked(
        lambda m, p: None if m is None else jnp.zeros(p.shape, jnp.float32),
        masks, params)

  def update_aux(aux: Any, grads: Any, masks: Any) -> Any:
    return masks_lib.map_masked(
        lambda m, e, g: None if m is None else
        momentum * e + (1.0 - momentum) * g.astype(jnp.float32),
        masks, aux, grads)

  return base.MaskMethod(name='snfs', kind='dst', grow_score=_momentum_scores,
                         init_aux=init_aux, update_aux=update_aux,
                         redistribute=redistribute)


def redistribute_counts(total: jax.Array, weights: jax.Array,
                        capacity: jax.Array) -> jax.Array:
  """Splits ``total`` regrowths across layers, in proportion and within room.

  Water-filling: each round hands every layer with room its share (rounded
  up), trimmed so that the running sum never exceeds what is left; a round
  either places everything or fills at least one layer, so ``len(weights)``
  rounds always suffice.

  Args:
    total: int32 scalar, connections to grow in all.
    weights: float32 [L], non-negative layer weights (mean momentum); NaN
      counts as 0 and infinite weights share equally.
    capacity: int32 [L], positions available in each layer.

  Returns:
    int32 [L] counts with sum == min(total, sum(capacity)) and
    counts <= capacity.
  """
  n = weights.shape[0]
  alloc = jnp.zeros_like(capacity)
  # Scale the weights into [0, 1] so that their sum cannot overflow (an inf
  # sum made every share 0 or NaN, and nothing was grown): NaN and negative
  # weights count as 0, infinite ones share equally.
  weights = weights.astype(jnp.float32)
  weights = jnp.where(jnp.isnan(weights), 0.0, jnp.maximum(weights, 0.0))
  top = jnp.max(weights)
  weights = jnp.where(jnp.isinf(top), jnp.isinf(weights).astype(jnp.float32),
                      weights / jnp.where(top > 0.0, top, 1.0))

  def body(_, alloc):
    left = total - jnp.sum(alloc)
    room = capacity - alloc
    w = jnp.where(room > 0, weights + 1e-12, 0.0)
    share = w / jnp.maximum(jnp.sum(w), 1e-30)
    add = jnp.minimum(room, jnp.ceil(share * left).astype(jnp.int32))
    before = jnp.cumsum(add) - add
    add = jnp.clip(left - before, 0, add)
    return alloc + add

  return jax.lax.fori_loop(0, n, body, alloc)
