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

`Chain` runs a stack of such layers (an MLP's hidden layers with ReLU and
its head) for a few examples in one compiled call, bias and activation
inside the loop: at batch 1 a layer's product takes tens of microseconds,
and a Python call per layer, with its temporaries, would cost about as
much again.

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


  @numba.njit(parallel=True, fastmath=True, cache=True)
  def _chain_gather(layers, x_t, relu_hidden):  # pragma: no cover - compiled
    h = x_t
    for l, (rows, values, indices, bias) in enumerate(layers):
      relu = relu_hidden and l < len(layers) - 1
      n = h.shape[0]
      out = np.empty((n, bias.shape[0]), np.float32)
      for c in range(n):
        for j in range(bias.shape[0]):
          b = bias[j]
          out[c, j] = max(b, np.float32(0.0)) if relu else b
      units, k = values.shape
      if indices.shape[1] == 0 and k > 0:  # a small dense layer: in order
        for u in range(units):
          j = rows[u]
          for c in range(n):
            acc = bias[j]
            row = h[c]
            for i in range(k):
              acc += values[u, i] * row[i]
            out[c, j] = max(acc, np.float32(0.0)) if relu else acc
        h = out
        continue
      for u in numba.prange(units):
        j = rows[u]
        for c in range(n):
          acc = bias[j]
          row = h[c]
          for i in range(k):
            acc += values[u, i] * row[indices[u, i]]
          out[c, j] = max(acc, np.float32(0.0)) if relu else acc
      h = out
    return h


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


class Chain:
  """Consecutive constant fan-in layers ``h = act(W.T @ h + b)``, fused.

  Every layer but the last is followed by a ReLU (``relu_hidden``). For at
  most `GATHER_MAX_COLUMNS` examples and with numba, the whole stack runs in
  one compiled call; otherwise layer by layer with `matmul`.

  Args:
    layers: per layer ``(rows, values, indices, bias)``: the output units
      that have inputs (int), their ``(len(rows), k)`` weights and input
      indices, and the float32 bias over all ``fan_out`` units (units not in
      ``rows`` output their bias). ``indices`` None: a small dense layer,
      ``values`` holding every input's weight in order (multiplied in one
      thread, without the gather).
    relu_hidden: apply a ReLU after every layer but the last.

  Example:
    >>> layer0 = (np.array([0, 1]), np.array([[1.0], [-1.0]], np.float32),
    ...           np.array([[0], [1]], np.int32), np.zeros(2, np.float32))
    >>> layer1 = (np.array([0]), np.array([[1.0, 1.0]], np.float32),
    ...           np.array([[0, 1]], np.int32), np.full(1, 0.5, np.float32))
    >>> Chain([layer0, layer1])(np.array([[2.0, 3.0]], np.float32))
    array([[2.5]], dtype=float32)
  """

  def __init__(self, layers, relu_hidden: bool = True):
    if not layers:
      raise ValueError('Chain needs at least one layer')
    wide = any(ind is not None and int(np.max(ind, initial=0)) >= 1 << 16
               for _, _, ind, _ in layers)
    index_dtype = np.int32 if wide else np.uint16
    self.layers = [
        (np.ascontiguousarray(rows, np.int64),
         np.ascontiguousarray(values, np.float32),
         (np.zeros((len(rows), 0), index_dtype) if indices is None else
          np.ascontiguousarray(indices, index_dtype)),
         np.ascontiguousarray(bias, np.float32))
        for rows, values, indices, bias in layers]
    self.relu_hidden = relu_hidden
    self._typed = None
    if numba is not None:
      self._typed = numba.typed.List(self.layers)

  def __call__(self, x: np.ndarray) -> np.ndarray:
    """The stack's output, ``(n, fan_out)``, for float32 ``x`` ``(n, fan_in)``
    (sample-major)."""
    x = np.ascontiguousarray(x, np.float32)
    if self._typed is not None and x.shape[0] <= GATHER_MAX_COLUMNS:
      return _chain_gather(self._typed, x, self.relu_hidden)
    h = np.ascontiguousarray(x.T)  # feature-major for `matmul`
    last = len(self.layers) - 1
    for l, (rows, values, indices, bias) in enumerate(self.layers):
      out = np.repeat(bias[:, None], h.shape[1], axis=1)
      if indices.shape[1] == 0 and values.shape[1] > 0:
        out[rows] += values @ h
      else:
        part = np.zeros((rows.size, h.shape[1]), np.float32)
        out[rows] += matmul(values, indices, h, part)
      h = np.maximum(out, 0.0) if self.relu_hidden and l < last else out
    return h.T
