"""Per-layer sparsity distributions: uniform, Erdős–Rényi (ER) and ER-Kernel.

Given a global target sparsity over the sparse leaves, a distribution decides
how sparse each leaf is (Evci et al. 2020, Section 3, "Sparsity
Distribution"; ER from Mocanu et al. 2018). The computation is pure Python on
shapes, so it works on arrays and on `jax.ShapeDtypeStruct` alike.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any, Optional

import jax
import numpy as np

from rigl_jax import layers as layers_lib
from rigl_jax import paths as paths_lib

DISTRIBUTIONS = ('uniform', 'erk', 'er')
# How ER/ERK count the zero budget (see `sparsity_distribution`).
BUDGETS = ('exact', 'reference')


def check_sparsity(sparsity: float, name: str = 'sparsity') -> float:
  """Returns ``sparsity`` as a float, or raises if it is not in [0, 1)."""
  try:
    s = float(sparsity)
  except (TypeError, ValueError):
    raise ValueError(f'{name} must be a number in [0, 1); got {sparsity!r}'
                     ) from None
  if not 0.0 <= s < 1.0 or math.isnan(s):
    raise ValueError(f'{name} must be in [0, 1); got {sparsity!r}')
  return s


def match_custom(custom_sparsity: Optional[Mapping[str, float]],
                 sparse_paths: list[str]) -> dict[str, float]:
  """``{sparse path: sparsity}`` of the custom-sparsity keys (exact paths or
  full-match regexes); raises ValueError for a key matching no path."""
  out: dict[str, float] = {}
  for key, value in (custom_sparsity or {}).items():
    value = check_sparsity(value, f'custom_sparsity[{key!r}]')
    hits = [p for p in sparse_paths if p == key]
    if not hits:
      try:
        hits = [p for p in sparse_paths if re.fullmatch(key, p)]
      except re.error:
        hits = []
    if not hits:
      raise ValueError(
          f'custom_sparsity names {key!r}, which matches no sparse leaf; '
          f'sparse leaves are: {sparse_paths}')
    for p in hits:
      out[p] = value
  return out


def _erk_densities(layers: dict[str, tuple[tuple[int, ...], int]],
                   sparsity: float, distribution: str,
                   power: float, budget: str = 'exact') -> dict[str, float]:
  """Solves for ER/ERK per-layer densities with the global zero budget.

  ``layers`` maps a leaf name to ``(layer shape, number of layers)``: a
  stacked leaf counts as that many layers of its slice's shape. Each layer
  gets density ``eps * raw[l]``; ``eps`` is chosen so that the zeros add up
  to ``sparsity * sum(N_l)``. Layers whose density would exceed 1 are made
  dense and the rest re-solved, repeatedly (as in the reference
  implementation, google-research/rigl ``rigl/sparse_utils.py``,
  ``get_sparsities_erdos_renyi``). With ``budget='reference'`` the zeros
  are counted as that function counts them, ``floor(sparsity * N_l)`` per
  layer (rigl/sparse_utils.py:151-162), and ER's raw densities take no
  power (lines 168-169).
  """
  raw = {}
  for name, (shape, _) in layers.items():
    if distribution == 'erk':
      raw[name] = (sum(shape) / math.prod(shape)) ** power
    else:  # 'er': fan-in + fan-out of the last two dims
      n_in, n_out = (shape[-2], shape[-1]) if len(shape) >= 2 else (
          1, shape[-1])
      raw[name] = (n_in + n_out) / (n_in * n_out)
      if budget != 'reference':
        raw[name] **= power
  dense: set[str] = set()
  while True:
    rhs, divisor = 0.0, 0.0
    for name, (shape, count) in layers.items():
      n = math.prod(shape) * count
      zeros = (num_zeros(shape, sparsity, budget) * count
               if budget == 'reference' else n * sparsity)
      if name in dense:
        rhs -= zeros
      else:
        rhs += n - zeros
        divisor += raw[name] * n
    if divisor <= 0.0 or rhs <= 0.0:
      raise ValueError(
          f'{distribution!r} cannot reach sparsity {sparsity}: after making '
          f'{sorted(dense)} dense, the remaining layers would need density '
          f'<= 0. Use a lower sparsity or the uniform distribution.')
    eps = rhs / divisor
    max_raw = max(raw[n] for n in layers if n not in dense)
    if eps * max_raw > 1.0:
      dense.update(n for n in layers if n not in dense and raw[n] == max_raw)
      continue
    return {n: (1.0 if n in dense else eps * raw[n]) for n in layers}


def sparse_layers(params: Any, is_sparse: paths_lib.IsSparse = None,
                  stacked: layers_lib.Stacked = None
                  ) -> dict[str, tuple[tuple[int, ...], int]]:
  """``{path: (layer shape, number of layers)}`` of the sparse leaves."""
  pred = paths_lib.make_is_sparse(is_sparse)
  rules = layers_lib.parse_stacked(stacked)
  out = {}
  for name, x in paths_lib.flatten(params)[0]:
    if paths_lib.can_be_sparse(x) and pred(name, x):
      shape = tuple(int(d) for d in np.shape(x))
      axis = layers_lib.stack_axis(rules, name, shape)
      out[name] = (layers_lib.layer_shape(shape, axis),
                   layers_lib.num_layers(shape, axis))
  return out


def sparsity_distribution(params: Any,
                          sparsity: float,
                          distribution: str = 'erk',
                          *,
                          is_sparse: paths_lib.IsSparse = None,
                          custom_sparsity: Optional[Mapping[str, float]] = None,
                          erk_power_scale: float = 1.0,
                          stacked: layers_lib.Stacked = None,
                          sparsity_budget: str = 'exact') -> Any:
  """Per-leaf sparsity for a global target.

  Args:
    params: a parameter pytree (arrays or shape structs).
    sparsity: the target fraction of zeros over the sparse leaves, in [0, 1).
    distribution: ``'uniform'`` (every sparse leaf gets ``sparsity``),
      ``'erk'`` (Erdős–Rényi-Kernel: density proportional to
      ``sum(shape) / prod(shape)``) or ``'er'`` (Erdős–Rényi on the last two
      dims: ``(fan_in + fan_out) / (fan_in * fan_out)``).
    is_sparse: which leaves are sparse (see `paths.make_is_sparse`).
    custom_sparsity: ``{path or full-match regex: sparsity}``; those leaves get
      exactly that sparsity and are left out of the ERK/ER budget.
    erk_power_scale: exponent applied to the ER/ERK raw densities (1.0 in the
      paper; smaller values move the distribution towards uniform).
    stacked: ``{path regex: axis}`` of leaves that stack layers along
      ``axis`` (see `rigl_jax.layers`); the shapes that enter ER/ERK are the
      slices', and each slice gets the leaf's sparsity.
    sparsity_budget: how ER/ERK count zeros: ``'exact'`` (the sparse
      leaves hold ``sparsity`` of their weights as zeros overall, up to one
      per layer) or ``'reference'`` (the official code's budget, zeros
      counted as ``floor(sparsity * N_l)`` per layer, for the official
      masks bit for bit; see `num_zeros`).

  Returns:
    A pytree shaped like ``params`` of Python floats: each sparse leaf's
    sparsity (of each of its layers), and 0.0 for dense leaves.

  Raises:
    ValueError: for a sparsity outside [0, 1), an unknown distribution, a
      custom sparsity naming no sparse leaf, or an unreachable ERK target.

  Example:
    >>> import jax.numpy as jnp
    >>> from rigl_jax import distributions
    >>> params = {'a': {'kernel': jnp.ones((10, 10))},
    ...           'b': {'kernel': jnp.ones((10, 90)), 'bias': jnp.ones(90)}}
    >>> s = distributions.sparsity_distribution(params, 0.5, 'erk')
    >>> round(s['a']['kernel'], 3), round(s['b']['kernel'], 3), s['b']['bias']
    (0.167, 0.537, 0.0)
  """
  sparsity = check_sparsity(sparsity)
  if sparsity_budget not in BUDGETS:
    raise ValueError(f'unknown sparsity_budget {sparsity_budget!r}; valid '
                     f'choices are {list(BUDGETS)}')
  if distribution not in DISTRIBUTIONS:
    raise ValueError(f'unknown sparsity distribution {distribution!r}; valid '
                     f'choices are {list(DISTRIBUTIONS)}')
  layers = sparse_layers(params, is_sparse, stacked)
  custom = match_custom(custom_sparsity, list(layers))
  budget = {n: v for n, v in layers.items() if n not in custom}

  result: dict[str, float] = dict(custom)
  if budget:
    if distribution == 'uniform' or sparsity == 0.0:
      result.update({n: sparsity for n in budget})
    else:
      dens = _erk_densities(budget, sparsity, distribution, erk_power_scale,
                            sparsity_budget)
      empty = [n for n, d in dens.items()
               if d * math.prod(budget[n][0]) < 1.0]
      if empty:
        raise ValueError(
            f'{distribution!r} cannot reach sparsity {sparsity}: it gives '
            f'{empty} less than one weight; use a lower sparsity, the '
            f'uniform distribution, or a custom_sparsity for those leaves.')
      result.update({n: 1.0 - d for n, d in dens.items()})
  flat, treedef = paths_lib.flatten(params)
  leaves = [None if x is None else result.get(n, 0.0) for n, x in flat]
  return jax.tree_util.tree_unflatten(treedef, leaves)


def num_zeros(shape: tuple[int, ...], sparsity: float,
              budget: str = 'exact') -> int:
  """Zeros a layer of ``shape`` holds at ``sparsity``: floor(s * N).

  ``budget='exact'`` reads a product within 1e-6 of an integer as that
  integer (0.7 * 90 is 62.99999999999999 in float64: 63 zeros);
  ``'reference'`` truncates as `get_n_zeros` does (rigl/sparse_utils.py:
  35-36; 62 zeros there).

  Example:
    >>> num_zeros((9, 10), 0.7), num_zeros((9, 10), 0.7, 'reference')
    (63, 62)
  """
  x = sparsity * math.prod(shape)
  if budget == 'reference':
    return int(np.floor(x))
  r = round(x)
  # Guard against float error such as 0.7 * 90 == 62.99999999999999.
  return int(r if abs(x - r) < 1e-6 else math.floor(x))
