"""Continuous Sparsification: the pure pieces of the ticket search.

Every sparse kernel ``w`` gets mask logits ``s`` of its shape, initialised to
``s0``. During the search the model sees

    w * sigmoid(beta * s) / sigmoid(s0)

(the gate is exactly 1 at ``s = s0, beta = 1``) and the loss adds
``lambda * sum(sigmoid(beta * s) / sigmoid(s0))`` over all masks: the
penalty is the sum of the gates themselves, as in the authors' code
(`SoftMaskedConv2d.compute_mask` is what main.py sums,
lolemacs/continuous-sparsification models/layers.py:30-34, main.py:74-76).
The temperature ``beta`` grows exponentially over the epochs of a search
round to its final value; between rounds the logits above ``s0`` are reset
to ``s0`` and ``beta`` restarts at 1. The ticket is the hard mask
``1[s > 0]``, and the retrained ticket sees ``w * 1[s > 0] / sigmoid(s0)``
(`ticket_scale`; the same scaling, layers.py:31-34).

Logit trees are shaped like the params with ``None`` for dense leaves, as
mask trees are (`rigl_jax.get_masks`). Everything here is jit-compatible.

References:
  P. Savarese, H. Silva, M. Maire. Winning the Lottery with Continuous
  Sparsification. NeurIPS 2020.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp

from rigl_jax import masks as masks_lib
from rigl_jax import paths as paths_lib


def temperature(epoch: Any, num_epochs: int, final: float) -> jax.Array:
  """beta at ``epoch`` (0-based) of a round: ``final ** (epoch / (E - 1))``.

  Starts at 1 and reaches ``final`` at the last epoch ``E - 1``; a one-epoch
  round runs at ``final`` throughout.

  Example:
    >>> float(temperature(4, 5, 200.0))
    200.0
  """
  if num_epochs < 1:
    raise ValueError(f'num_epochs must be >= 1; got {num_epochs!r}')
  e = jnp.asarray(epoch, jnp.float32)
  exponent = e / (num_epochs - 1) if num_epochs > 1 else jnp.ones_like(e)
  return jnp.asarray(final, jnp.float32) ** exponent


def init_logits(params: Any, s0: float, is_sparse: paths_lib.IsSparse = None
                ) -> Any:
  """Mask logits: ``s0`` for every sparse leaf, None for dense leaves.

  Args:
    params: the parameter pytree.
    s0: the initial logit value.
    is_sparse: which leaves get a mask (as in `rigl_jax.sparsify`).
  """
  flags = paths_lib.sparse_leaf_flags(params, is_sparse)
  return jax.tree.map(
      lambda p, f: jnp.full(jnp.shape(p), s0, jnp.float32) if f else None,
      params, flags)


def gate(s: jax.Array, beta: Any, s0: Any) -> jax.Array:
  """The soft mask ``sigmoid(beta * s) / sigmoid(s0)``."""
  return jax.nn.sigmoid(beta * s) / jax.nn.sigmoid(jnp.asarray(s0, s.dtype))


def gated_params(params: Any, logits: Any, beta: Any, s0: Any) -> Any:
  """The params the model sees during the search: ``w * gate(s)``."""
  return masks_lib.map_masked(
      lambda s, w: w if s is None else w * gate(s, beta, s0).astype(w.dtype),
      logits, params)


def penalty(logits: Any, beta: Any, s0: Any) -> jax.Array:
  """``sum(sigmoid(beta * s)) / sigmoid(s0)`` over every mask entry: the sum
  of the gates (lambda not applied)."""
  total = jnp.zeros([], jnp.float32)
  for s in jax.tree.leaves(logits):
    total = total + jnp.sum(jax.nn.sigmoid(beta * s), dtype=jnp.float32)
  return total / jax.nn.sigmoid(jnp.asarray(s0, jnp.float32))


def ticket_scale(s0: float) -> float:
  """What the retrained ticket multiplies its active weights by:
  ``1 / sigmoid(s0)`` (2 at ``s0 = 0``).

  Example:
    >>> ticket_scale(0.0)
    2.0
  """
  return 1.0 + math.exp(-float(s0))


def scaled_params(params: Any, masks: Any, scale: float) -> Any:
  """``w * scale`` on the sparse leaves (a mask that is not None), the
  other leaves as they are: the weights the retrained ticket's model sees."""
  return jax.tree.map(
      lambda m, w: w if m is None else w * jnp.asarray(scale, w.dtype),
      masks, params, is_leaf=lambda x: x is None)


def reset_logits(logits: Any, s0: float) -> Any:
  """Between rounds: logits above ``s0`` are set to ``s0``, others kept."""
  return jax.tree.map(lambda s: jnp.minimum(s, jnp.asarray(s0, s.dtype)),
                      logits)


def hard_masks(logits: Any) -> Any:
  """The ticket: ``s > 0`` per sparse leaf (bool), None per dense leaf."""
  return masks_lib.map_masked(lambda s: None if s is None else s > 0, logits)
