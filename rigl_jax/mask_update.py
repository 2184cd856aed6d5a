"""Pure mask-update rules, per layer, and the tail of Algorithm 1.

Every sparse leaf arrives in its layer view ``(L, *layer_shape)`` (see
`rigl_jax.layers`); each rule is written for one layer and `jax.vmap`-ed
over ``L``, so a stacked leaf's slices are updated as separate layers.

- `drop`: keep the ``nnz - floor(f * nnz)`` best-scored (largest |w|)
  active weights of each layer (Evci et al. 2020, Algorithm 1,
  ArgTopK(|theta|)).
- `grow`: activate the best-scored positions outside what was kept.
- `redistribute`: share the regrowth across layers (SNFS).
- `prune_layers` / `prune_global`: magnitude pruning to a target.
- `masked_updates`, `reset_inner_state`: what the inner optimizer's updates
  and state become when masks change (the step skipped where the method
  says, dropped weights set to 0, grown ones starting at 0 with the state the
  optimizer would give a fresh zero weight).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from rigl_jax import counts
from rigl_jax import selection
from rigl_jax import structure as structure_lib


def floor_product(fraction: jax.Array, count: jax.Array) -> jax.Array:
  """floor(fraction * count) as int32, robust to float32 error (0.7 * 10);
  gradual pruning's count (the drop count is `drop_count`)."""
  x = jnp.asarray(fraction, jnp.float32) * count.astype(jnp.float32)
  r = jnp.round(x)
  return jnp.where(jnp.abs(x - r) < 1e-3, r, jnp.floor(x)).astype(jnp.int32)


def drop_count(fraction: jax.Array, nnz: jax.Array) -> jax.Array:
  """The connections a mask update drops: ``int(float32(nnz) * fraction)``.

  The reference's rule exactly (`n_prune`, google-research/rigl
  rigl/sparse_optimizers_base.py:287-289): the float32 product, truncated,
  with no tolerance; a product that float32 rounding leaves just below an
  integer is truncated as it is there.

  Example:

  >>> int(drop_count(jnp.float32(0.3), jnp.int32(10)))
  3
  >>> # RigL's cosine drop fraction at step 1100 of 8000: 402.99985 in f32.
  >>> int(drop_count(jnp.float32(0.28622147), jnp.int32(1408)))
  402
  """
  x = jnp.asarray(fraction, jnp.float32) * nnz.astype(jnp.float32)
  return jnp.floor(x).astype(jnp.int32)


def _tail_sum(x: jax.Array) -> jax.Array:
  """Per-layer sum of a layer view: ``(L, ...) -> (L,)``, int32."""
  return selection.row_counts(x.reshape(x.shape[0], -1))


def active_counts(masks: Sequence[jax.Array]) -> list[jax.Array]:
  """nnz of every layer of every leaf: a ``(L,)`` int32 array per leaf."""
  return [_tail_sum(m) for m in masks]


def drop(scores: Sequence[jax.Array], masks: Sequence[jax.Array],
         fraction: jax.Array) -> tuple[list[jax.Array], list[jax.Array]]:
  """Drops the `drop_count` lowest-scored active weights of every layer.

  Args:
    scores: drop scores per leaf (layer views): |w|, plus noise if any.
    masks: the current masks.
    fraction: the drop fraction.

  Returns:
    ``(kept, n_drop)``: the kept masks, and the ``(L,)`` drop counts.
  """
  nnz = [_tail_sum(m) for m in masks]
  n_drop = [drop_count(fraction, n) for n in nnz]
  kept = selection.top_k_rows(list(scores), [a - n for a, n in zip(nnz, n_drop)],
                              list(masks))
  return kept, n_drop


def grow(kept: Sequence[jax.Array], scores: Sequence[jax.Array],
         n_grow: Sequence[jax.Array],
         structure: structure_lib.Structure) -> list[jax.Array]:
  """New masks: what was kept plus the grown positions of every layer."""
  if isinstance(structure, structure_lib.Unstructured):
    # Every layer's top-k in one search (`Unstructured.grow` per layer).
    grown = selection.top_k_rows(list(scores), list(n_grow),
                                 [~k for k in kept])
  else:
    grown = [jax.vmap(structure.grow)(k, s, n)
             for k, s, n in zip(kept, scores, n_grow)]
  return [k | g for k, g in zip(kept, grown)]


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


def redistribute(n_drop: Sequence[jax.Array], kept: Sequence[jax.Array],
                 masks: Sequence[jax.Array], scores: Sequence[jax.Array],
                 fixed: Sequence[bool]) -> list[jax.Array]:
  """SNFS's regrowth counts: the connections dropped in the layers that may
  change are regrown across them in proportion to each layer's mean score
  over its active weights; a layer whose sparsity is fixed (by
  ``custom_sparsity``) regrows exactly what it dropped.

  Returns:
    The ``(L,)`` grow counts of every leaf.
  """
  free = [i for i, f in enumerate(fixed) if not f]
  if not free:
    return list(n_drop)
  sizes = [int(np.prod(masks[i].shape[1:])) for i in free]
  mean = jnp.concatenate([
      jnp.sum(jnp.where(masks[i], scores[i], 0.0).reshape(
          masks[i].shape[0], -1), axis=1) /
      jnp.maximum(_tail_sum(masks[i]), 1) for i in free])
  capacity = jnp.concatenate(
      [n - _tail_sum(kept[i]) for n, i in zip(sizes, free)])
  total = sum(jnp.sum(n_drop[i]) for i in free)
  counts = redistribute_counts(total, mean, capacity)
  out, start = list(n_drop), 0
  for i in free:
    n_layers = masks[i].shape[0]
    out[i] = counts[start:start + n_layers]
    start += n_layers
  return out


def prune_layers(magnitudes: Sequence[jax.Array], masks: Sequence[jax.Array],
                 targets: Sequence[jax.Array],
                 structure: structure_lib.Structure) -> list[jax.Array]:
  """Keeps ``size - floor(target * size)`` largest weights of every layer."""
  n_keep = []
  for m, target in zip(masks, targets):
    size = int(np.prod(m.shape[1:]))
    n = size - floor_product(target, jnp.asarray(size))
    n_keep.append(jnp.full([m.shape[0]], n, jnp.int32))
  if isinstance(structure, structure_lib.Unstructured):
    # Every layer's top-k in one search (`Unstructured.prune` per layer).
    return selection.top_k_rows(list(magnitudes), n_keep, list(masks))
  return [jax.vmap(structure.prune)(w, n, m)
          for w, n, m in zip(magnitudes, n_keep, masks)]


def prune_global(magnitudes: Sequence[jax.Array], masks: Sequence[jax.Array],
                 target: jax.Array) -> list[jax.Array]:
  """Keeps the largest weights over all layers together, to ``target``."""
  total = sum(m.size for m in masks)
  if total < 2**31:
    n_keep = counts.of(total - floor_product(target, jnp.asarray(total)))
  else:  # past int32: the wide count (`rigl_jax.counts`)
    n_keep = counts.sub(counts.of(total), counts.floor_fraction(target, total))
  return selection.top_k_masks(list(magnitudes), n_keep, list(masks))


def churn(old: Sequence[jax.Array], new: Sequence[jax.Array]) -> jax.Array:
  """Fraction of the active connections that a mask update removed."""
  removed = sum((selection.count_true(o & ~n) for o, n in zip(old, new)),
                jnp.zeros([], jnp.int32))
  active = sum((selection.count_true(o) for o in old),
               jnp.zeros([], jnp.int32))
  return removed / jnp.maximum(active, 1).astype(jnp.float32)


def leaked(weights: Sequence[jax.Array],
           masks: Sequence[jax.Array]) -> jax.Array:
  """Nonzero weights at masked positions, per leaf: int32 ``(2, leaves)``,
  all of them (row 0) and those that are NaN or infinite (row 1: a
  diverged run, not a transformation after `sparsify`)."""
  if not masks:
    return jnp.zeros([2, 0], jnp.int32)
  return jnp.stack([
      jnp.stack([selection.count_true((w != 0) & ~m) for w, m in
                 zip(weights, masks)]),
      jnp.stack([selection.count_true(~jnp.isfinite(w) & ~m) for w, m in
                 zip(weights, masks)])])


def masked_updates(updates: Any, params: Any, masks: Any,
                   skip: jax.Array, grown: Any = None,
                   grow_values: Any = None) -> Any:
  """The updates that leave every masked weight at exactly 0.

  Args:
    updates: the inner optimizer's updates (a pytree like params).
    params: the current params.
    masks: the masks after this step (None for dense leaves).
    skip: bool scalar: the weight update of this step is skipped
      (Algorithm 1 on a mask-update step): active and dense weights get 0.
    grown: optional bool tree like params: the new connections of this step.
    grow_values: with ``grown``: the values new connections start at.

  Returns:
    ``-p`` at masked positions (dropped weights go to 0, others stay 0),
    ``value - p`` at new connections if ``grow_values`` is given, the update
    (or 0 when skipped) elsewhere.
  """
  if grown is None:
    grown = jax.tree.map(lambda _: None, masks, is_leaf=lambda x: x is None)
    grow_values = grown

  def one(m, u, p, g, v):
    if u is None:
      return None
    u = jnp.where(skip, jnp.zeros_like(u), u)
    if m is None:
      return u
    u = jnp.where(m, u, (-p).astype(u.dtype))
    if g is not None and v is not None:
      u = jnp.where(g, (v - p).astype(u.dtype), u)
    return u
  return jax.tree.map(one, masks, updates, params, grown, grow_values,
                      is_leaf=lambda x: x is None)


class _Param:
  """Marks a state leaf that mirrors a parameter: the positions whose mask
  changed (None for a dense parameter) and, optionally, the new connections
  and the value their state starts at."""

  def __init__(self, changed: Any, grown: Any = None, value: Any = None):
    self.changed, self.grown, self.value = changed, grown, value


def _is_masked_node(x: Any) -> bool:
  return isinstance(x, optax.MaskedNode) or x is None


def reset_inner_state(inner: optax.GradientTransformation, old: Any,
                      new: Any, fresh: Any, changed: Any,
                      hold: jax.Array, update: jax.Array,
                      grown: Any = None, grown_value: Any = None) -> Any:
  """The inner state after a step whose masks may have changed.

  Parameter-shaped state (momentum, Adam moments, schedule-free's ``z``...,
  found with `optax.tree_map_params`, `optax.MaskedNode` included) is held
  at its value before the step where ``hold`` (the step skipped), and takes
  ``fresh`` (what ``inner.init`` gives the new, masked params: 0 for
  momenta) at every position whose mask changed. Every other leaf (step
  counts, schedule states, injected hyperparameters) advances as usual.

  Args:
    inner: the inner optimizer.
    old: its state before the step; new: after the step; fresh:
      ``inner.init`` of the params with the new masks.
    changed: a tree like the params: bool arrays where masks changed, None
      for dense leaves.
    hold: bool scalar: keep parameter-shaped state at ``old``.
    update: bool scalar: masks changed at this step.
    grown: optional bool tree like the params: the new connections.
    grown_value: with ``grown``: a tree like the params whose values every
      parameter-shaped state leaf takes at the new connections, instead of
      ``fresh`` (RigL's ``initial_acc_scale`` momentum).

  Returns:
    The state.
  """
  is_none = lambda x: x is None  # pylint: disable=unnecessary-lambda-assignment
  if grown is None:
    grown = jax.tree.map(lambda _: None, changed, is_leaf=is_none)
    grown_value = grown
  info = jax.tree.map(
      lambda c, g, v: None if c is None else _Param(c, g, v),
      changed, grown, grown_value, is_leaf=is_none)

  def mark(_, p):
    return p if isinstance(p, _Param) else _Param(None)

  try:
    marks = optax.tree_map_params(
        inner, mark, old, info,
        transform_non_params=lambda _: None,
        is_leaf=_is_masked_node)
  except Exception:  # pylint: disable=broad-except
    # An init that cannot run on optax's placeholder: match the subtrees
    # shaped like the params instead.
    marks = _marks_by_structure(old, info)

  def one(mk, o, n, f):
    if not isinstance(mk, _Param) or not hasattr(n, 'shape'):
      return n
    base = jnp.where(hold, o, n)
    c = mk.changed
    if c is None or np.shape(c) != np.shape(n):
      return base
    out = jnp.where(update & c, f, base)
    if mk.grown is not None and mk.value is not None:
      out = jnp.where(update & mk.grown, mk.value.astype(out.dtype), out)
    return out

  return jax.tree.map(one, marks, old, new, fresh,
                      is_leaf=lambda x: isinstance(x, _Param) or x is None)


def _marks_by_structure(state: Any, changed: Any) -> Any:
  p_def = jax.tree.structure(changed, is_leaf=lambda x: x is None)

  def mirrors(x):
    try:
      return jax.tree.structure(x, is_leaf=lambda y: y is None) == p_def
    except Exception:  # pylint: disable=broad-except
      return False

  def visit(x):
    if mirrors(x):
      return jax.tree.map(
          lambda _, c: c if isinstance(c, _Param) else _Param(None), x,
          changed, is_leaf=lambda y: y is None)
    return jax.tree.map(lambda _: None, x)

  return jax.tree.map(visit, state, is_leaf=mirrors)
