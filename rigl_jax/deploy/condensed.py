"""Products with condensed (constant fan-in) kernels: ``out += W.T @ x``.

A constant fan-in kernel (SRigL; the ``condensed`` encoding of
`rigl_jax.deploy.export`) is stored per output unit as its ``k`` weights
and their input indices, ``(units, k)`` arrays. The product then reads, for
each unit, ``k`` inputs of ``x`` and ``k`` weights: dense-shaped loops with
no row pointers, which is what makes the layer faster than its dense
version at batch 1 (Lasby et al. 2024, Sec. 4.4, measure 3.4x for a 90%
linear layer on CPU).

With numba installed (the ``experiments`` extra) the loops are compiled
and run in parallel over units: for few columns each unit dots its weights
with the gathered inputs of every column; for many it adds each weight
times the matching input row to the unit's output row (contiguous in the
columns, so vectorised). Without numba a numpy gather does the same in
chunks of units.

Example:
  >>> import numpy as np
  >>> values = np.array([[1.0, 2.0], [3.0, 4.0]], np.float32)
  >>> indices = np.array([[0, 2], [1, 2]], np.int32)  # unit j reads these
  >>> x = np.array([[1.0], [10.0], [100.0]], np.float32)  # (fan_in, n)
  >>> matmul(values, indices, x, np.zeros((2, 1), np.float32)).ravel()
  array([201., 430.], dtype=float32)
"""

from __future__ import annotations

import numpy as np

try:  # numba is optional: a numpy fallback below
  import numba  # pylint: disable=g-import-not-at-top
except ImportError:  # pragma: no cover - depends on the environment
  numba = None

# Columns up to which each unit dots its weights with gathered inputs;
# above it, row updates (measured crossover on 2 cores: 8-32 columns).
GATHER_MAX_COLUMNS = 16
# numpy fallback: gathered elements per chunk of units.
_CHUNK_ELEMENTS = 1 << 22

if numba is not None:

  @numba.njit(parallel=True, fastmath=True, cache=True)
  def _gather_dot(values, indices, x_t, out):  # pragma: no cover - compiled
    units, k = values.shape
    n = x_t.shape[0]
    for j in numba.prange(units):
      for c in range(n):
        acc = np.float32(0.0)
        row = x_t[c]
        for i in range(k):
          acc += values[j, i] * row[indices[j, i]]
        out[j, c] += acc

  @numba.njit(parallel=True, fastmath=True, cache=True)
  def _row_updates(values, indices, x, out):  # pragma: no cover - compiled
    units, k = values.shape
    n = x.shape[1]
    for j in numba.prange(units):
      acc = np.zeros(n, np.float32)
      for i in range(k):
        v = values[j, i]
        r = indices[j, i]
        for c in range(n):
          acc[c] += v * x[r, c]
      for c in range(n):
        out[j, c] += acc[c]


def compiled() -> bool:
  """Whether the numba kernels are available."""
  return numba is not None


def matmul(values: np.ndarray, indices: np.ndarray, x: np.ndarray,
           out: np.ndarray) -> np.ndarray:
  """``out[j] += sum_i values[j, i] * x[indices[j, i]]`` for every unit j.

  Args:
    values: float32 ``(units, k)``.
    indices: integer ``(units, k)``, each in ``[0, fan_in)``.
    x: float32 ``(fan_in, n)``, feature-major.
    out: float32 ``(units, n)``, accumulated into.

  Returns:
    ``out``.
  """
  units, k = values.shape
  n = x.shape[1]
  if units == 0 or k == 0 or n == 0:
    return out
  if numba is not None:
    if n <= GATHER_MAX_COLUMNS:
      _gather_dot(values, indices, np.ascontiguousarray(x.T), out)
    else:
      _row_updates(values, indices, x, out)
    return out
  step = max(1, _CHUNK_ELEMENTS // max(k * n, 1))
  for start in range(0, units, step):
    rows = slice(start, start + step)
    out[rows] += np.einsum('uk,ukn->un', values[rows], x[indices[rows]])
  return out
