"""Mask pytrees: a bool array per sparse leaf and ``None`` per dense leaf."""

from __future__ import annotations

from typing import Any

import jax
from jax import lax
import jax.numpy as jnp
import numpy as np

from rigl_jax import distributions
from rigl_jax import paths as paths_lib
from rigl_jax import selection


def is_none(x: Any) -> bool:
  return x is None


def map_masked(fn, masks: Any, *trees: Any) -> Any:
  """``jax.tree.map`` over masks and param-shaped trees, treating None as a leaf.

  ``fn(mask, *leaves)`` is called for every leaf; ``mask`` is None for dense
  leaves.
  """
  return jax.tree.map(fn, masks, *trees, is_leaf=is_none)


def apply_masks(params: Any, masks: Any) -> Any:
  """Returns ``params`` with zeros wherever the mask is False.

  Args:
    params: a parameter pytree.
    masks: a pytree shaped like ``params`` (as returned by `get_masks`): a
      bool array per sparse leaf and None per dense leaf.

  Returns:
    The masked parameters; dense leaves are returned unchanged.
  """
  return map_masked(
      lambda m, p: p if m is None else jnp.where(m, p, jnp.zeros_like(p)),
      masks, params)


def sparse_masks_like(params: Any, flags: Any, fill: bool = True) -> Any:
  """Constant masks: ``fill`` for every sparse leaf, None for dense leaves."""
  return jax.tree.map(
      lambda p, f: jnp.full(np.shape(p), fill, jnp.bool_) if f else None,
      params, flags)


# Columns of the row layout `random_layer_masks` searches all layers in.
_COLS = 1024


def random_layer_masks(key: jax.Array, layer_shapes: list[tuple[int, ...]],
                       n_keep: list[int]) -> list[jax.Array]:
  """Uniformly random masks with exactly ``n_keep[l]`` ones per layer.

  All layers are drawn from one stream and selected by one segmented
  threshold search (`selection.segment_top_k`): each layer takes
  ``ceil(size / 1024)`` rows of a ``(rows, 1024)`` array, in order, so a
  layer's mask depends on the layers before it only through its position
  in that order, and compiling the initialisation costs one search however
  many layers there are. (`random_selection` and `split_selection` are its
  two halves.)

  Args:
    key: a PRNG key.
    layer_shapes: the shape of every layer.
    n_keep: active positions of every layer.

  Returns:
    One bool mask per layer.
  """
  if not layer_shapes:
    return []
  return split_selection(random_selection(key, layer_shapes, n_keep),
                         layer_shapes)


def _rows(layer_shapes: list[tuple[int, ...]]) -> tuple[list[int], list[int]]:
  sizes = [int(np.prod(s)) for s in layer_shapes]
  return sizes, [-(-n // _COLS) for n in sizes]


def random_selection(key: jax.Array, layer_shapes: list[tuple[int, ...]],
                     n_keep: list[int]) -> jax.Array:
  """The draws of `random_layer_masks`, every layer in one ``(rows, 1024)``
  bool array (a layer's rows in order, its last row padded with False)."""
  sizes, rows = _rows(layer_shapes)
  segment = np.repeat(np.arange(len(sizes)), rows)
  total = int(sum(rows))
  # Padding at the end of each layer's last row is invalid; computed from
  # iotas in the program (a constant this size would slow compilation).
  seg = jnp.asarray(segment, jnp.int32)
  first_row = jnp.asarray(np.cumsum([0] + rows[:-1]), jnp.int32)[seg]
  pos = ((jnp.arange(total, dtype=jnp.int32) - first_row)[:, None] * _COLS +
         jnp.arange(_COLS, dtype=jnp.int32)[None, :])
  valid = pos < jnp.asarray(sizes, jnp.int32)[seg][:, None]
  # 31-bit integer draws: ties (which cost a search over positions) are
  # ~256x rarer than among float32 uniforms' 2**23 values.
  scores = lax.shift_right_logical(
      jax.random.bits(key, (total, _COLS), jnp.uint32),
      jnp.uint32(1)).astype(jnp.int32)
  return selection.segment_top_k(scores, tuple(segment.tolist()),
                                 jnp.asarray(n_keep, jnp.int32), valid)


def split_selection(sel: Any, layer_shapes: list[tuple[int, ...]]
                    ) -> list[Any]:
  """The layers' masks from a `random_selection` (jax or numpy arrays)."""
  sizes, rows = _rows(layer_shapes)
  out, start = [], 0
  for r, n, shape in zip(rows, sizes, layer_shapes):
    out.append(sel[start:start + r].reshape(-1)[:n].reshape(shape))
    start += r
  return out


def random_masks(params: Any, sparsities: Any, flags: Any,
                 key: jax.Array) -> Any:
  """Uniformly random masks with exactly ``floor(s_l * N_l)`` zeros per leaf.

  Args:
    params: parameter pytree (only shapes are used).
    sparsities: per-leaf sparsities (floats), as from
      `distributions.sparsity_distribution`.
    flags: per-leaf bools, True for sparse leaves.
    key: a PRNG key.

  Returns:
    A mask pytree (see `random_layer_masks` for how the draws are laid out).
  """
  leaves, treedef = jax.tree.flatten(params)
  sps = jax.tree.leaves(sparsities)
  fl = jax.tree.leaves(flags)
  idx = [i for i, f in enumerate(fl) if f]
  shapes = [tuple(np.shape(leaves[i])) for i in idx]
  keep = [int(np.prod(s)) - distributions.num_zeros(s, sps[i])
          for s, i in zip(shapes, idx)]
  drawn = random_layer_masks(key, shapes, keep)
  out = [None] * len(leaves)
  for i, m in zip(idx, drawn):
    out[i] = m
  return jax.tree.unflatten(treedef, out)


def check_init_masks(init_masks: Any, params: Any, flags: Any) -> Any:
  """Validates user-given masks against params.

  Args:
    init_masks: a pytree shaped like ``params`` with a bool array for every
      sparse leaf; dense leaves may hold None or an all-True array.
    params: the parameter pytree.
    flags: per-leaf bools (a pytree like ``params``), True for sparse leaves.

  Returns:
    The mask pytree (bool arrays for sparse leaves, None for dense ones).

  Raises:
    ValueError: naming the leaf, if the tree structure or a shape does not
      match ``params``, a mask is not boolean, or a mask has no active
      weight.
  """
  flat, p_def = paths_lib.flatten(params)
  try:
    m_leaves = p_def.flatten_up_to(init_masks)
  except (ValueError, TypeError) as e:
    raise ValueError(
        'init_masks must have the same tree structure as params (None for '
        f'dense leaves); {e}') from None
  f_leaves = p_def.flatten_up_to(flags)
  out = []
  for (name, p), m, f in zip(flat, m_leaves, f_leaves):
    if not f:
      out.append(None)
      continue
    if m is None:
      raise ValueError(f'init_masks has no mask for sparse leaf {name!r}')
    if tuple(np.shape(m)) != tuple(np.shape(p)):
      raise ValueError(
          f'init_masks[{name!r}] has shape {tuple(np.shape(m))}, but the '
          f'parameter has shape {tuple(np.shape(p))}')
    dtype = getattr(m, 'dtype', np.asarray(m).dtype)
    if dtype != np.bool_:
      raise ValueError(
          f'init_masks[{name!r}] has dtype {dtype}; masks must be boolean '
          '(convert with mask.astype(bool) if 0/1 is what you mean)')
    if not isinstance(m, jax.core.Tracer) and not np.any(np.asarray(m)):
      raise ValueError(
          f'init_masks[{name!r}] has no active weight (all False): the layer '
          'would stay at zero. Give it at least one True, or leave it out of '
          'the sparse leaves with is_sparse')
    out.append(jnp.asarray(m))
  return jax.tree.unflatten(p_def, out)


def mask_sparsity(masks: Any) -> dict[str, jax.Array]:
  """Per-leaf and global fraction of zeros of a mask pytree.

  Returns:
    ``{path: sparsity}`` for each sparse leaf plus ``'global'`` over all of
    them (float32 scalars; works under jit).
  """
  flat, _ = jax.tree_util.tree_flatten_with_path(masks, is_leaf=is_none)
  out, zeros, total = {}, 0, 0
  for path, m in flat:
    if m is None:
      continue
    z = m.size - jnp.sum(m, dtype=jnp.int32)
    out[paths_lib.path_str(path)] = z / m.size
    zeros, total = zeros + z, total + m.size
  out['global'] = (jnp.float32(zeros) / max(total, 1)).astype(jnp.float32)
  return out
