"""Mask pytrees: a bool array per sparse leaf and ``None`` per dense leaf."""

from __future__ import annotations

from typing import Any

import jax
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


def random_masks(params: Any, sparsities: Any, flags: Any,
                 key: jax.Array) -> Any:
  """Uniformly random masks with exactly ``floor(s_l * N_l)`` zeros per leaf.

  Args:
    params: parameter pytree (only shapes are used).
    sparsities: per-leaf sparsities (floats), as from
      `distributions.sparsity_distribution`.
    flags: per-leaf bools, True for sparse leaves.
    key: a PRNG key; leaf i uses ``fold_in(key, i)``.

  Returns:
    A mask pytree.
  """
  leaves, treedef = jax.tree.flatten(params)
  sps = jax.tree.leaves(sparsities)
  fl = jax.tree.leaves(flags)
  out = []
  for i, (p, s, f) in enumerate(zip(leaves, sps, fl)):
    if not f:
      out.append(None)
      continue
    shape = np.shape(p)
    n_keep = int(np.prod(shape)) - distributions.num_zeros(shape, s)
    scores = jax.random.uniform(jax.random.fold_in(key, i), shape)
    out.append(selection.top_k_mask(scores, n_keep))
  return jax.tree.unflatten(treedef, out)


def check_init_masks(init_masks: Any, params: Any, flags: Any) -> Any:
  """Validates user-given masks against params and converts them to bool.

  Args:
    init_masks: a pytree shaped like ``params`` with an array (bool or 0/1) for
      every sparse leaf; dense leaves may hold None or an all-True array.
    params: the parameter pytree.
    flags: per-leaf bools, True for sparse leaves.

  Returns:
    The mask pytree (bool arrays for sparse leaves, None for dense ones).

  Raises:
    ValueError: if the tree structure or a shape does not match ``params``.
  """
  p_def = jax.tree.structure(params)
  try:
    m_leaves = p_def.flatten_up_to(init_masks)
  except (ValueError, TypeError) as e:
    raise ValueError(
        'init_masks must have the same tree structure as params (None for '
        f'dense leaves); {e}') from None
  names = paths_lib.leaf_paths(params)
  out = []
  for name, p, m, f in zip(names, jax.tree.leaves(params), m_leaves,
                           jax.tree.leaves(flags)):
    if not f:
      out.append(None)
      continue
    if m is None:
      raise ValueError(f'init_masks has no mask for sparse leaf {name!r}')
    if tuple(np.shape(m)) != tuple(np.shape(p)):
      raise ValueError(
          f'init_masks[{name!r}] has shape {tuple(np.shape(m))}, but the '
          f'parameter has shape {tuple(np.shape(p))}')
    out.append(jnp.asarray(m).astype(jnp.bool_))
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
