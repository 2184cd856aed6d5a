"""N:M structured sparsity: exactly N nonzeros in every group of M weights.

Groups run along a kernel's input dimension (axis -2: ``in`` of a dense
``(in, out)`` kernel, ``c_in`` of a conv ``(h, w, c_in, c_out)`` kernel), M
consecutive inputs for each output, the layout sparse tensor cores accelerate
(2:4 on NVIDIA Ampere and later; Mishra et al. 2021, "Accelerating Sparse
Deep Neural Networks"). Dynamic sparse training keeps the structure the way
Zhou et al. (ICLR 2021, "Learning N:M Fine-grained Structured Sparse Neural
Networks From Scratch") and RigL combine: a mask update drops the k
smallest-magnitude active weights of the layer as usual, then every group
regrows as many connections as it lost, picking its best-scored inactive
positions, so every group has N active weights again. Gradual pruning keeps
each group's N largest weights throughout and prunes the rest by magnitude.

Selection within a group ranks its M scores pairwise (M is small), breaking
ties by position, so results are deterministic.
"""

from __future__ import annotations

import re
from typing import Any, NamedTuple, Optional, Union

import jax
import jax.numpy as jnp
import numpy as np

from rigl_jax import selection

NM = tuple[int, int]
UNSTRUCTURED = 'unstructured'


def parse(structure: Any) -> Optional[NM]:
  """``'unstructured'``/None -> None; ``'N:M'`` or ``(N, M)`` -> (N, M).

  Raises:
    ValueError: anything else, or not 0 < N < M.
  """
  if structure is None or structure == UNSTRUCTURED:
    return None
  if isinstance(structure, str):
    match = re.fullmatch(r'\s*(\d+)\s*:\s*(\d+)\s*', structure)
    if not match:
      raise ValueError(f"unknown sparsity structure {structure!r}; valid "
                       f"choices are '{UNSTRUCTURED}' or 'N:M' (e.g. '2:4')")
    n, m = int(match.group(1)), int(match.group(2))
  else:
    try:
      n, m = (int(x) for x in structure)
    except (TypeError, ValueError):
      raise ValueError(f'unknown sparsity structure {structure!r}; valid '
                       f"choices are '{UNSTRUCTURED}' or 'N:M'") from None
  if not 0 < n < m:
    raise ValueError(f'N:M structure needs 0 < N < M; got {n}:{m}')
  return n, m


def sparsity_of(nm: NM) -> float:
  """The sparsity N:M gives: 1 - N/M."""
  return 1.0 - nm[0] / nm[1]


def check_shape(path: str, shape: tuple[int, ...], nm: NM) -> None:
  """Raises ValueError unless ``shape``'s input dimension splits into groups."""
  if len(shape) < 2 or shape[-2] % nm[1]:
    raise ValueError(
        f'{path} with shape {tuple(shape)} cannot be {nm[0]}:{nm[1]} sparse: '
        f'its input dimension (axis -2) must be a multiple of {nm[1]}; keep it '
        'dense with is_sparse (e.g. a first conv with 3 input channels)')


def _grouped(x: jax.Array, m: int) -> jax.Array:
  """(..., in, out) -> (..., in // m, m, out)."""
  shape = x.shape
  return x.reshape(shape[:-2] + (shape[-2] // m, m, shape[-1]))


def group_top(scores: jax.Array, counts: jax.Array | int, m: int,
              valid: Optional[jax.Array] = None) -> jax.Array:
  """In each group of ``m``, the ``counts`` best valid positions.

  Args:
    scores: a kernel-shaped float array (negative and NaN count as 0).
    counts: how many to pick per group: an int, or an int array shaped like
      the grouped scores with a size-1 group axis, ``(..., in//m, 1, out)``.
    m: group size.
    valid: optional bool array shaped like ``scores``.

  Returns:
    A bool mask shaped like ``scores``.
  """
  s = scores.astype(jnp.float32)
  s = jnp.where(jnp.isnan(s), 0.0, jnp.maximum(s, 0.0))
  g = _grouped(s, m)
  v = (jnp.ones(g.shape, jnp.bool_) if valid is None
       else _grouped(valid, m))
  key = jnp.where(v, g, -1.0)  # invalid positions rank last
  ki = key[..., :, None, :]  # position i
  kj = key[..., None, :, :]  # position j
  idx = jnp.arange(m)
  earlier = (idx[None, :] < idx[:, None])[:, :, None]  # j < i
  ahead = (kj > ki) | ((kj == ki) & earlier)
  rank = jnp.sum(ahead, axis=-2, dtype=jnp.int32)
  return (v & (rank < counts)).reshape(scores.shape)


def group_counts(mask: jax.Array, m: int) -> jax.Array:
  """Active positions per group, shaped ``(..., in//m, 1, out)``."""
  return jnp.sum(_grouped(mask, m), axis=-2, keepdims=True, dtype=jnp.int32)


def random_mask(key: jax.Array, shape: tuple[int, ...], nm: NM) -> jax.Array:
  """A uniformly random N:M mask."""
  return group_top(jax.random.uniform(key, shape), nm[0], nm[1])


def regrow(kept: jax.Array, scores: jax.Array, nm: NM) -> jax.Array:
  """Grows, in each group, as many of its best-scored positions outside
  ``kept`` as bring it back to N active; returns the grown positions."""
  deficit = nm[0] - group_counts(kept, nm[1])
  return group_top(scores, deficit, nm[1], valid=~kept)


def prune_keep(magnitude: jax.Array, n_keep: jax.Array | int, nm: NM,
               valid: jax.Array) -> jax.Array:
  """Keeps each group's N largest valid weights plus the largest others, up
  to ``n_keep`` in the layer (at least the N per group)."""
  protected = group_top(magnitude, nm[0], nm[1], valid=valid)
  extra = jnp.maximum(
      jnp.asarray(n_keep, jnp.int32) - jnp.sum(protected, dtype=jnp.int32), 0)
  return protected | selection.top_k_mask(magnitude, extra,
                                          valid=valid & ~protected)


def satisfies(mask: Any, nm: NM) -> bool:
  """True if every group of ``mask`` (host array) has exactly N active."""
  mask = np.asarray(mask)
  shape = mask.shape
  g = mask.reshape(shape[:-2] + (shape[-2] // nm[1], nm[1], shape[-1]))
  return bool(np.all(g.sum(axis=-2) == nm[0]))


class Unstructured(NamedTuple):
  """No constraint: any position of a layer may be active."""

  @property
  def sparsity(self) -> Optional[float]:
    """The sparsity the structure fixes (None: any)."""
    return None

  def check(self, path: str, shape: tuple[int, ...]) -> None:
    del path, shape

  def grow(self, kept: jax.Array, scores: jax.Array,
           n_grow: jax.Array) -> jax.Array:
    """The ``n_grow`` best-scored positions outside ``kept``."""
    return selection.top_k_mask(scores, n_grow, valid=~kept)

  def prune(self, magnitude: jax.Array, n_keep: jax.Array,
            valid: jax.Array) -> jax.Array:
    """The ``n_keep`` largest valid weights."""
    return selection.top_k_mask(magnitude, n_keep, valid=valid)


class NMStructure(NamedTuple):
  """N nonzeros in every group of M inputs (see the module docstring)."""
  n: int
  m: int

  @property
  def sparsity(self) -> Optional[float]:
    return sparsity_of((self.n, self.m))

  def check(self, path: str, shape: tuple[int, ...]) -> None:
    check_shape(path, shape, (self.n, self.m))

  def random_mask(self, key: jax.Array, shape: tuple[int, ...]) -> jax.Array:
    return random_mask(key, shape, (self.n, self.m))

  def grow(self, kept: jax.Array, scores: jax.Array,
           n_grow: jax.Array) -> jax.Array:
    """Each group regrows what it lost (``n_grow`` follows from ``kept``)."""
    del n_grow
    return regrow(kept, scores, (self.n, self.m))

  def prune(self, magnitude: jax.Array, n_keep: jax.Array,
            valid: jax.Array) -> jax.Array:
    return prune_keep(magnitude, n_keep, (self.n, self.m), valid=valid)


Structure = Union[Unstructured, NMStructure]


def get_structure(structure: Any) -> Structure:
  """``'unstructured'``/None/a structure object -> a structure strategy;
  ``'N:M'`` or ``(N, M)`` -> `NMStructure`.

  Raises:
    ValueError: as `parse`.
  """
  if isinstance(structure, (Unstructured, NMStructure)):
    return structure
  nm = parse(structure)
  return Unstructured() if nm is None else NMStructure(*nm)
