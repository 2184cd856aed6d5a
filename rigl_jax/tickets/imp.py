"""Iterative magnitude pruning: prune a fraction of the remaining weights.

One IMP round (Frankle & Carbin 2019; Frankle et al. 2019) trains to the end,
removes ``fraction`` of the still-active weights of smallest magnitude, and
rewinds to an early iterate. This module is the pruning rule:

- ``scope='global'``: one magnitude threshold across all sparse leaves;
  ``floor(fraction * R)`` weights go, ``R`` being the remaining count over
  all of them, so per-layer sparsities differ.
- ``scope='layer'``: every sparse leaf loses ``floor(fraction * R_l)`` of its
  own ``R_l`` remaining weights.

Counts are exact integers: ``fraction`` is read as the decimal it is written
as (0.2 is 1/5), so after n global rounds from N weights the remaining count
is ``R_n = R_{n-1} - floor(R_{n-1} / 5)``, i.e. a sparsity of
``1 - 0.8^n`` up to that rounding. Ties in magnitude are broken by position
(`rigl_jax.top_k_masks`). Runs between rounds with concrete masks.

References:
  J. Frankle, M. Carbin. The Lottery Ticket Hypothesis. ICLR 2019.
  J. Frankle, G. K. Dziugaite, D. M. Roy, M. Carbin. Stabilizing the Lottery
  Ticket Hypothesis. arXiv:1903.01611, 2019.
"""

from __future__ import annotations

import fractions
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from rigl_jax import counts
from rigl_jax import masks as masks_lib
from rigl_jax import selection

SCOPES = ('global', 'layer')

# open_lth's control branches of a pruning level (lottery/branch/): the
# level's mask on a fresh random initialisation (`randomly_reinitialize`),
# and a random mask with the level's per-layer sparsities on the rewound
# weights (`randomly_prune`, strategy 'layerwise').
CONTROLS = ('random_reinit', 'random_mask')

# Compiled once per set of shapes; k is traced.
_top_k_masks = jax.jit(selection.top_k_masks)
_top_k_mask = jax.jit(selection.top_k_mask)


def num_pruned(fraction: float, remaining: int) -> int:
  """``floor(fraction * remaining)`` in exact arithmetic.

  Example:
    >>> num_pruned(0.2, 266200), num_pruned(0.29, 100)
    (53240, 29)
  """
  frac = fractions.Fraction(repr(float(fraction)))
  return int(frac * int(remaining) // 1)


def check_args(fraction: float, scope: str) -> None:
  """Raises ValueError for a fraction outside [0, 1] or an unknown scope."""
  if scope not in SCOPES:
    raise ValueError(f'unknown pruning scope {scope!r}; valid choices are '
                     f'{list(SCOPES)}')
  if not 0.0 <= float(fraction) <= 1.0:
    raise ValueError(f'prune fraction must be in [0, 1]; got {fraction!r}')


def prune_remaining(params: Any, masks: Any, fraction: float = 0.2,
                    scope: str = 'global') -> Any:
  """Removes ``fraction`` of the active weights by magnitude.

  Args:
    params: the trained parameters.
    masks: current masks (bool per sparse leaf, None per dense leaf).
    fraction: fraction of the remaining weights to remove.
    scope: ``'global'`` (one threshold over all sparse leaves) or
      ``'layer'`` (each leaf loses ``fraction`` of its own remaining
      weights).

  Returns:
    New masks, a subset of ``masks``.

  Example:
    >>> import jax.numpy as jnp
    >>> params = {'a': jnp.array([[1., 2.], [3., 4.]]), 'b': jnp.zeros(2)}
    >>> masks = {'a': jnp.ones((2, 2), bool), 'b': None}
    >>> prune_remaining(params, masks, 0.5)['a'].tolist()
    [[False, False], [True, True]]
  """
  check_args(fraction, scope)
  mask_leaves, treedef = jax.tree.flatten(masks, is_leaf=masks_lib.is_none)
  w_leaves = treedef.flatten_up_to(params)
  idx = [i for i, m in enumerate(mask_leaves) if m is not None]
  new = list(mask_leaves)
  if scope == 'global':
    remaining = sum(int(np.sum(mask_leaves[i])) for i in idx)
    keep = remaining - num_pruned(fraction, remaining)
    # A wide count: a global round may keep more than 2**31 weights.
    kept = _top_k_masks([jnp.abs(w_leaves[i]) for i in idx], counts.of(keep),
                        [mask_leaves[i] for i in idx])
    for i, k in zip(idx, kept):
      new[i] = k
  else:
    for i in idx:
      remaining = int(np.sum(mask_leaves[i]))
      keep = remaining - num_pruned(fraction, remaining)
      new[i] = _top_k_mask(jnp.abs(w_leaves[i]), keep, mask_leaves[i])
  return jax.tree.unflatten(treedef, new)


def expected_remaining(total: int, rounds: int, fraction: float = 0.2) -> int:
  """The global remaining count after ``rounds`` prunings of ``total``."""
  r = int(total)
  for _ in range(rounds):
    r -= num_pruned(fraction, r)
  return r


def shuffle_layerwise(masks: Any, key: jax.Array) -> Any:
  """Each sparse leaf's mask permuted at random: the same count of active
  weights per leaf, at random positions (open_lth's ``randomly_prune`` with
  strategy ``'layerwise'``, lottery/branch/randomly_prune.py).

  Args:
    masks: bool per sparse leaf, None per dense leaf.
    key: PRNG key; leaf i uses ``fold_in(key, i)``.

  Returns:
    The shuffled masks.

  Example:
    >>> import jax, jax.numpy as jnp
    >>> m = {'w': jnp.arange(12).reshape(3, 4) < 5, 'b': None}
    >>> out = shuffle_layerwise(m, jax.random.PRNGKey(0))
    >>> int(out['w'].sum()), out['w'].shape, out['b']
    (5, (3, 4), None)
  """
  leaves, treedef = jax.tree.flatten(masks, is_leaf=lambda x: x is None)
  out = []
  for i, m in enumerate(leaves):
    if m is None:
      out.append(None)
      continue
    m = jnp.asarray(m, bool)
    flat = jax.random.permutation(jax.random.fold_in(key, i), m.ravel())
    out.append(flat.reshape(m.shape))
  return jax.tree.unflatten(treedef, out)
