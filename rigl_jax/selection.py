"""Exact top-k selection as boolean masks, fast on CPU, GPU and TPU.

Mask updates need "the k largest scores of a layer" with k a traced value
(it depends on the step through the drop-fraction schedule). Sorting a whole
layer costs O(N log N) and is slow under XLA on CPU; `jax.lax.top_k` needs a
static k. Instead we find the k-th largest score by bisection on the bits of
the float scores: for non-negative float32 values the int32 bit pattern is
monotonic in the value, so at most 31 counting passes find the threshold
exactly. Ties at the threshold are broken by position (lower index first), by
a second bisection on the index that only runs when ties actually straddle the
threshold. Every pass is a fused compare-and-sum, so the cost is a few dozen
streaming reads of the scores with no sort and no host sync.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Optional

import jax
import jax.numpy as jnp
from jax import lax

_EXCLUDED = -1  # key of positions that may not be selected


def _keys(scores: jax.Array, valid: Optional[jax.Array]) -> jax.Array:
  """Order-preserving int32 keys of non-negative scores; -1 where invalid."""
  s = scores.astype(jnp.float32)
  # NaN and negative scores never win; +inf is allowed (largest key).
  s = jnp.where(jnp.isnan(s), 0.0, jnp.maximum(s, 0.0))
  k = lax.bitcast_convert_type(s, jnp.int32)
  if valid is not None:
    k = jnp.where(valid, k, _EXCLUDED)
  return k.reshape(-1)


def _count(keys: Sequence[jax.Array], pred) -> jax.Array:
  total = jnp.zeros([], jnp.int32)
  for key in keys:
    total = total + jnp.sum(pred(key), dtype=jnp.int32)
  return total


def top_k_masks(scores: Sequence[jax.Array],
                k: jax.Array | int,
                valid: Optional[Sequence[Optional[jax.Array]]] = None
                ) -> list[jax.Array]:
  """Selects the ``k`` largest scores jointly over several arrays.

  Scores are treated as non-negative (negative values and NaN count as 0).
  Among equal scores, earlier arrays and lower flat indices win, so the result
  is deterministic.

  Args:
    scores: float arrays of any shapes.
    k: how many positions to select in total (may be traced). Values above
      the number of valid positions select every valid position.
    valid: optional bool arrays shaped like ``scores``; only positions where
      ``valid`` is True can be selected.

  Returns:
    Bool arrays shaped like ``scores`` with exactly ``min(k, #valid)`` True
    entries in total.
  """
  if valid is None:
    valid = [None] * len(scores)
  keys = [_keys(s, v) for s, v in zip(scores, valid)]
  k = jnp.asarray(k, jnp.int32)

  # Largest threshold t with count(key >= t) >= k, by bisection on [0, max].
  hi0 = jnp.maximum(
      jnp.max(jnp.stack([jnp.max(key, initial=_EXCLUDED) for key in keys])), 0)

  def value_step(carry):
    lo, hi = carry
    mid = lo + (hi - lo + 1) // 2
    ok = _count(keys, lambda key: key >= mid) >= k
    return jnp.where(ok, mid, lo), jnp.where(ok, hi, mid - 1)

  t, _ = lax.while_loop(lambda c: c[0] < c[1], value_step,
                        (jnp.zeros([], jnp.int32), hi0))

  n_gt = _count(keys, lambda key: key > t)
  n_eq = _count(keys, lambda key: key == t)
  need = jnp.clip(k - n_gt, 0, n_eq)

  # Among ties at t, take the first `need` by global position: the smallest
  # J with count(key == t and position < J) >= need.
  sizes = [key.size for key in keys]
  offsets = [sum(sizes[:i]) for i in range(len(sizes))]
  total = sum(sizes)

  def tie_count(j):
    c = jnp.zeros([], jnp.int32)
    for key, off in zip(keys, offsets):
      pos = lax.iota(jnp.int32, key.size) + off
      c = c + jnp.sum((key == t) & (pos < j), dtype=jnp.int32)
    return c

  def index_step(carry):
    lo, hi = carry
    mid = lo + (hi - lo) // 2
    ok = tie_count(mid) >= need
    return jnp.where(ok, lo, mid + 1), jnp.where(ok, mid, hi)

  start = jnp.where(need == n_eq, total, 0).astype(jnp.int32)
  j, _ = lax.while_loop(lambda c: c[0] < c[1], index_step,
                        (start, jnp.asarray(total, jnp.int32)))

  out = []
  for s, key, off in zip(scores, keys, offsets):
    pos = lax.iota(jnp.int32, key.size) + off
    sel = (key > t) | ((key == t) & (pos < j))
    sel = sel & (key != _EXCLUDED) & (k > 0)
    out.append(sel.reshape(s.shape))
  return out


def top_k_mask(scores: jax.Array, k: jax.Array | int,
               valid: Optional[jax.Array] = None) -> jax.Array:
  """Single-array `top_k_masks`: the ``k`` largest entries of ``scores``."""
  return top_k_masks([scores], k, None if valid is None else [valid])[0]
