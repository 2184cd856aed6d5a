"""CPU inference that computes with the sparse weights of an exported model.

`load(path)` reads a file written by `rigl_jax.deploy.export` and returns a
callable
model with the Flax model's interface (``model(x) -> logits``, inputs and
outputs laid out as ``model.apply`` takes and returns them) whose dense and
convolution layers multiply by their sparse kernels: the work per layer grows
with its nonzeros, not its dense size. Supported models (by their
`rigl_jax.experiment.models` name): ``mlp``, ``lenet_300_100``, ``lenet5``,
``small_cnn`` and ``char_lstm``.

How it computes. Activations are kept feature-major, ``(features, n)``, so a
layer is ``y = W.T @ x + b`` with ``n`` columns (the batch, times output
positions for a convolution, times steps for the LSTM's input projections).
A kernel ``W`` viewed as ``(fan_in, fan_out)`` in CSR form is ``W.T`` in CSC
form, so the exported CSR arrays make a scipy ``csc_matrix`` as they are
(its product scatters each input's nonzeros). From ``bcsr_min_columns`` (32)
columns on, a sparse layer uses `jax.experimental.sparse.BCSR` instead, whose
native CPU kernel is faster on wide right-hand sides (fed 256 columns at a
time). Convolutions go through im2col: the patches of a ``(C, B, H, W)``
activation form a ``(kh * kw * C, B * H' * W')`` matrix that the kernel's
2-D view ``(kh * kw * cin, cout)`` multiplies. A kernel denser than
``max_density`` (0.3) is multiplied densely.

Why these kernels, measured on a 2-core AVX-512 CPU for one 1024x1024
kernel at 90% sparsity (`benchmarks/sparse_inference.py --kernels`): times
one vector, scipy's product takes ~0.06 ms, the dense jitted product ~0.09
ms, a jitted BCOO product ~0.6 ms and BCSR ~1.4 ms; times 256 columns, BCSR
takes ~2.3 ms, scipy ~3 ms, dense ~5 ms and BCOO ~50 ms.

Example:
  >>> import numpy as np
  >>> from rigl_jax.deploy import export
  >>> rng = np.random.default_rng(0)
  >>> def kernel(a, b):
  ...   return (rng.normal(size=(a, b)) * (rng.random((a, b)) < 0.1)
  ...           ).astype(np.float32)
  >>> params = {'dense0': {'kernel': kernel(784, 256),
  ...                      'bias': np.zeros(256, np.float32)},
  ...           'head': {'kernel': kernel(256, 10),
  ...                    'bias': np.zeros(10, np.float32)}}
  >>> _ = export.export('/tmp/doctest_mlp.npz', params,
  ...                   metadata={'model': {'name': 'mlp'}})
  >>> model = load('/tmp/doctest_mlp.npz')
  >>> model(np.ones((2, 28, 28, 1), np.float32)).shape
  (2, 10)
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Optional, Union

import jax
from jax.experimental import sparse as jsparse
import numpy as np
import scipy.sparse
import scipy.special

from rigl_jax.deploy import condensed as condensed_lib
from rigl_jax.deploy import export as export_lib

Leaf = Union[np.ndarray, export_lib.EncodedLeaf]
DEFAULT_MAX_DENSITY = 0.3
DEFAULT_BCSR_MIN_COLUMNS = 32
# BCSR products are computed this many columns at a time (the native kernel
# slows down several-fold on wider right-hand sides, out of cache).
_BCSR_CHUNK = 256


# Dense products up to this many multiply-adds use numpy (single-threaded
# BLAS, no dispatch cost); larger ones XLA, like the dense model (numpy's
# threaded BLAS can stall for milliseconds waking its threads on a busy CPU).
_NUMPY_MAX_MACS = 1 << 16


@jax.jit
def _matmul(matrix: Union[jax.Array, jsparse.BCSR], x: jax.Array
            ) -> jax.Array:
  return matrix @ x


def _density(leaf: Any) -> float:
  if isinstance(leaf, export_lib.EncodedLeaf):
    return leaf.nnz / max(leaf.size, 1)
  return float(np.count_nonzero(leaf)) / max(np.size(leaf), 1)


def _array(leaf: Leaf) -> np.ndarray:
  if isinstance(leaf, export_lib.EncodedLeaf):
    return leaf.to_dense()
  return np.asarray(leaf)


class Linear:
  """``y = W.T @ x + b`` on feature-major activations, sparse when it pays.

  ``x`` has ``n`` columns (batch, times output positions for a convolution,
  times steps for a sequence). A sparse kernel multiplies fewer than
  ``bcsr_min_columns`` columns as a scipy CSC matrix, more as a
  `jax.experimental.sparse.BCSR` matrix (a native CPU kernel, faster on wide
  right-hand sides; built on first use). A ``condensed`` (constant fan-in)
  kernel is multiplied by `rigl_jax.deploy.condensed.matmul` at any width.

  Args:
    kernel: the kernel, an array or an `export.EncodedLeaf`, viewed as
      ``(prod(shape[:-1]), shape[-1])``.
    bias: the bias (``shape[-1]``,) or None.
    max_density: kernels at most this dense are multiplied sparsely, the
      others densely (numpy for small products, XLA for large ones).
    bcsr_min_columns: the number of columns from which a sparse kernel uses
      BCSR; None: never.

  Attributes:
    fan_in, fan_out: the 2-D view's shape.
    sparse: whether the kernel is multiplied as a sparse matrix.
    nnz: its stored nonzeros (all elements when dense).
    bias: the bias as a float32 ``(fan_out, 1)`` column, or None.
  """

  def __init__(self, kernel: Leaf, bias: Optional[Leaf] = None,
               max_density: float = DEFAULT_MAX_DENSITY,
               bcsr_min_columns: Optional[int] = DEFAULT_BCSR_MIN_COLUMNS):
    self.fan_in, self.fan_out = export_lib.matrix_shape(kernel.shape)
    self.sparse = _density(kernel) <= max_density
    self.bcsr_min_columns = bcsr_min_columns
    self._bcsr = self._kernel_t_device = None
    self._condensed = None
    if self.sparse and isinstance(kernel, export_lib.EncodedLeaf) and (
        kernel.encoding == 'condensed'):
      # Constant fan-in: each live unit's k weights and input indices.
      live = np.nonzero(kernel.live())[0]
      values = kernel.arrays['values'][live]
      if values.dtype != kernel.dtype:
        values = values.view(kernel.dtype)
      # Indices stay in their narrow stored type (uint16 for up to 65536
      # inputs): a third less memory traffic than int32, ~1.4x faster.
      self._condensed = (live, np.ascontiguousarray(values, np.float32),
                         np.ascontiguousarray(kernel.arrays['indices'][live]))
      self.nnz = int(values.size)
    elif self.sparse:
      if isinstance(kernel, export_lib.EncodedLeaf):
        indptr, indices, values = kernel.csr(np.int32)
      else:
        csr = scipy.sparse.csr_matrix(
            np.asarray(kernel).reshape(self.fan_in, self.fan_out))
        indptr, indices, values = csr.indptr, csr.indices, csr.data
      # The CSR arrays of W are those of W.T in CSC form.
      self._matrix = scipy.sparse.csc_matrix(
          (np.asarray(values, np.float32), indices, indptr),
          shape=(self.fan_out, self.fan_in))
      self.nnz = int(self._matrix.nnz)
    else:
      self._kernel_t = np.ascontiguousarray(
          _array(kernel).reshape(self.fan_in, self.fan_out).T, np.float32)
      self.nnz = self.fan_in * self.fan_out
    if bias is not None:
      bias = np.asarray(_array(bias), np.float32).reshape(self.fan_out, 1)
    self.bias = bias

  def condensed_form(self) -> Optional[tuple[np.ndarray, ...]]:
    """``(rows, values, indices, bias)`` for `condensed.Chain`: a condensed
    kernel's live units, or a small dense kernel (at most
    ``_NUMPY_MAX_MACS`` weights; indices None); None otherwise."""
    bias = (np.zeros(self.fan_out, np.float32) if self.bias is None
            else self.bias[:, 0])
    if self._condensed is not None:
      return (*self._condensed, bias)
    if not self.sparse and self.fan_in * self.fan_out <= _NUMPY_MAX_MACS:
      return np.arange(self.fan_out), self._kernel_t, None, bias
    return None

  def _bcsr_matrix(self) -> jsparse.BCSR:
    if self._bcsr is None:
      t = self._matrix.tocsr()
      self._bcsr = jsparse.BCSR(
          (t.data, t.indices.astype(np.int32), t.indptr.astype(np.int32)),
          shape=(self.fan_out, self.fan_in))
    return self._bcsr

  def accumulate(self, x: np.ndarray, out: np.ndarray) -> np.ndarray:
    """``out += W.T @ x`` in place (no bias).

    Args:
      x: float32 ``(fan_in, n)``.
      out: float32 ``(fan_out, n)``.

    Returns:
      ``out``.
    """
    n = x.shape[1]
    if self._condensed is not None:
      live, values, indices = self._condensed
      if live.size == self.fan_out:
        return condensed_lib.matmul(values, indices, x, out)
      part = np.zeros((live.size, n), np.float32)
      out[live] += condensed_lib.matmul(values, indices, x, part)
      return out
    if not self.sparse:
      if self.fan_in * self.fan_out * n <= _NUMPY_MAX_MACS:
        out += self._kernel_t @ x
      else:
        if self._kernel_t_device is None:
          self._kernel_t_device = jax.device_put(self._kernel_t)
        out += np.asarray(_matmul(self._kernel_t_device, x))
    elif self.bcsr_min_columns is not None and n >= self.bcsr_min_columns:
      matrix = self._bcsr_matrix()
      for start in range(0, n, _BCSR_CHUNK):
        cols = slice(start, min(start + _BCSR_CHUNK, n))
        out[:, cols] += np.asarray(_matmul(matrix, x[:, cols]))
    else:
      out += self._matrix @ x
    return out

  def __call__(self, x: np.ndarray) -> np.ndarray:
    """``W.T @ x + b`` for float32 ``x`` of shape ``(fan_in, n)``."""
    x = np.ascontiguousarray(x, np.float32)
    out = np.empty((self.fan_out, x.shape[1]), np.float32)
    if self.bias is None:
      out.fill(0.0)
    else:
      out[...] = self.bias
    return self.accumulate(x, out)


def _relu(x: np.ndarray) -> np.ndarray:
  return np.maximum(x, 0.0, out=x)


def _conv(layer: Linear, kernel_hw: tuple[int, int], padding: str,
          x: np.ndarray) -> np.ndarray:
  """A stride-1 convolution of a ``(C, B, H, W)`` activation via im2col."""
  kh, kw = kernel_hw
  if padding == 'SAME':
    x = np.pad(x, ((0, 0), (0, 0), ((kh - 1) // 2, kh // 2),
                   ((kw - 1) // 2, kw // 2)))
  elif padding != 'VALID':
    raise ValueError(f'unsupported padding {padding!r}')
  c, b, h, w = x.shape
  ho, wo = h - kh + 1, w - kw + 1
  windows = np.lib.stride_tricks.sliding_window_view(x, (kh, kw), axis=(2, 3))
  # (C, B, Ho, Wo, kh, kw) -> rows ordered (kh, kw, C) like the kernel's view.
  cols = np.ascontiguousarray(windows.transpose(4, 5, 0, 1, 2, 3)).reshape(
      kh * kw * c, b * ho * wo)
  return layer(cols).reshape(layer.fan_out, b, ho, wo)


def _max_pool(x: np.ndarray) -> np.ndarray:
  """2x2 max pooling, stride 2, 'VALID', on a ``(C, B, H, W)`` activation."""
  c, b, h, w = x.shape
  x = x[:, :, :h // 2 * 2, :w // 2 * 2]
  return x.reshape(c, b, h // 2, 2, w // 2, 2).max(axis=(3, 5))


def _flatten(x: np.ndarray) -> np.ndarray:
  """``(C, B, H, W)`` -> ``(H * W * C, B)``, Flax's ``(B, H, W, C)`` order."""
  c, b, h, w = x.shape
  return np.ascontiguousarray(x.transpose(2, 3, 0, 1)).reshape(h * w * c, b)


LinearFactory = Callable[..., Linear]


def _dense(params: dict[str, Any], name: str, linear: LinearFactory) -> Linear:
  return linear(params[name]['kernel'], params[name].get('bias'))


class _Model:
  """Common parts: the layers by name and a summary."""

  layers: dict[str, Linear]

  @property
  def nnz(self) -> int:
    """Multiply-adds per example of the dense and conv layers' kernels
    (per output position for convolutions)."""
    return sum(layer.nnz for layer in self.layers.values())

  def __repr__(self) -> str:
    parts = [f'{n}: {l.fan_in}x{l.fan_out} '
             f'{"sparse nnz=" + str(l.nnz) if l.sparse else "dense"}'
             for n, l in self.layers.items()]
    return f'{type(self).__name__}({"; ".join(parts)})'


class MLP(_Model):
  """`rigl_jax.experiment.models.MLP` (and LeNet-300-100): ``dense{i}`` +
  ReLU, ``head``.

  Args:
    params: the Flax params (arrays or `export.EncodedLeaf` leaves).
    linear: builds a layer from ``(kernel, bias)``; `Linear` with options.
  """

  def __init__(self, params: dict[str, Any], linear: LinearFactory = Linear):
    names = sorted((k for k in params if k.startswith('dense')),
                   key=lambda k: int(k[len('dense'):]))
    self.layers = {n: _dense(params, n, linear) for n in names + ['head']}
    chain = [layer.condensed_form() for layer in self.layers.values()]
    # A stack of condensed layers (small dense ones re-indexed as condensed)
    # runs fused for a few examples: one compiled call instead of a Python
    # call per layer.
    self._chain = (condensed_lib.Chain(chain)
                   if condensed_lib.compiled() and all(
                       c is not None for c in chain) else None)

  def __call__(self, x: Any) -> np.ndarray:
    """Maps (B, ...) inputs to (B, num_classes) float32 logits."""
    x = np.asarray(x, np.float32)
    if (self._chain is not None
        and x.shape[0] <= condensed_lib.GATHER_MAX_COLUMNS):
      return self._chain(x.reshape(x.shape[0], -1))
    h = np.ascontiguousarray(x.reshape(x.shape[0], -1).T)
    *hidden, head = self.layers.values()
    for layer in hidden:
      h = _relu(layer(h))
    return head(h).T


class LeNet5(_Model):
  """`rigl_jax.experiment.models.LeNet5`: two VALID 5x5 convs with pooling,
  two dense."""

  def __init__(self, params: dict[str, Any], linear: LinearFactory = Linear):
    self.layers = {n: _dense(params, n, linear)
                   for n in ('conv_init', 'conv1', 'dense0', 'head')}

  def __call__(self, x: Any) -> np.ndarray:
    """Maps (B, H, W, C) images to (B, num_classes) float32 logits."""
    h = np.asarray(x, np.float32).transpose(3, 0, 1, 2)
    h = _max_pool(_conv(self.layers['conv_init'], (5, 5), 'VALID', h))
    h = _max_pool(_conv(self.layers['conv1'], (5, 5), 'VALID', h))
    h = _relu(self.layers['dense0'](_flatten(h)))
    return self.layers['head'](h).T


class SmallCNN(_Model):
  """`rigl_jax.experiment.models.SmallCNN`: 3x3 SAME conv + ReLU + 2x2 pool
  stages."""

  def __init__(self, params: dict[str, Any], linear: LinearFactory = Linear):
    convs = ['conv_init'] + sorted(
        (k for k in params if k.startswith('conv') and k != 'conv_init'),
        key=lambda k: int(k[len('conv'):]))
    dense = ['dense0'] if 'dense0' in params else []
    self.layers = {n: _dense(params, n, linear)
                   for n in convs + dense + ['head']}
    self._convs, self._dense = convs, dense

  def __call__(self, x: Any) -> np.ndarray:
    """Maps (B, H, W, C) images to (B, num_classes) float32 logits."""
    h = np.asarray(x, np.float32).transpose(3, 0, 1, 2)
    for name in self._convs:
      h = _max_pool(_relu(_conv(self.layers[name], (3, 3), 'SAME', h)))
    h = _flatten(h)
    for name in self._dense:
      h = _relu(self.layers[name](h))
    return self.layers['head'](h).T


class CharLSTM(_Model):
  """`rigl_jax.experiment.models.CharLSTM`: embedding, stacked fused-gate
  LSTMs, head.

  The input projections of a layer are computed for the whole sequence at
  once; the recurrent one step by step.
  """

  def __init__(self, params: dict[str, Any], linear: LinearFactory = Linear,
               forget_bias: float = 1.0):
    embedding = params['embed']['embedding']
    if isinstance(embedding, export_lib.EncodedLeaf):
      embedding = embedding.to_dense()
    self.embedding = np.asarray(embedding, np.float32)
    self.forget_bias = forget_bias
    self.num_layers = sum(1 for k in params if k.startswith('lstm'))
    self.layers = {}
    for i in range(self.num_layers):
      cell = params[f'lstm{i}']
      self.layers[f'lstm{i}/input'] = linear(cell['input']['kernel'], None)
      self.layers[f'lstm{i}/recurrent'] = linear(
          cell['recurrent']['kernel'], cell['recurrent']['bias'])
    self.layers['head'] = _dense(params, 'head', linear)

  def __call__(self, tokens: Any) -> np.ndarray:
    """Maps int (B, T) tokens to (B, T, num_classes) float32 logits."""
    tokens = np.asarray(tokens)
    b, t = tokens.shape
    # Columns ordered (time, batch).
    h_seq = np.ascontiguousarray(
        self.embedding[tokens.T].reshape(t * b, -1).T)
    for i in range(self.num_layers):
      h_seq = self._layer(i, h_seq, t, b)
    logits = self.layers['head'](h_seq)
    return logits.reshape(-1, t, b).transpose(2, 1, 0)

  def _layer(self, i: int, x: np.ndarray, t: int, b: int) -> np.ndarray:
    recurrent = self.layers[f'lstm{i}/recurrent']
    hidden = recurrent.fan_in
    z_in = self.layers[f'lstm{i}/input'](x)  # (4H, T * B)
    z_in += recurrent.bias
    z_in[hidden:2 * hidden] += self.forget_bias
    # (T, 4H, B): each step's pre-activations are one contiguous block.
    z_in = np.ascontiguousarray(
        z_in.reshape(4 * hidden, t, b).transpose(1, 0, 2))
    c = np.zeros((hidden, b), np.float32)
    out = np.zeros((t, hidden, b), np.float32)
    h = np.zeros((hidden, b), np.float32)
    expit, tanh = scipy.special.expit, np.tanh
    for s in range(t):
      z = recurrent.accumulate(h, z_in[s])  # gates i, f, g, o
      expit(z[:2 * hidden], out=z[:2 * hidden])
      gi, gf = z[:hidden], z[hidden:2 * hidden]
      gg = tanh(z[2 * hidden:3 * hidden], out=z[2 * hidden:3 * hidden])
      go = expit(z[3 * hidden:], out=z[3 * hidden:])
      c *= gf
      c += gi * gg
      h = tanh(c, out=out[s])
      h *= go
    return np.ascontiguousarray(out.transpose(1, 0, 2)).reshape(hidden, t * b)


MODELS: dict[str, Callable[..., _Model]] = {
    'mlp': MLP,
    'lenet_300_100': MLP,
    'lenet5': LeNet5,
    'small_cnn': SmallCNN,
    'char_lstm': CharLSTM,
}


def build(name: str, params: Any, max_density: float = DEFAULT_MAX_DENSITY,
          bcsr_min_columns: Optional[int] = DEFAULT_BCSR_MIN_COLUMNS
          ) -> _Model:
  """The sparse forward of the model registered as ``name``.

  Args:
    name: a key of `MODELS` (the `rigl_jax.experiment.models` name).
    params: the Flax params: arrays (e.g. masked dense params) or
      `export.EncodedLeaf` leaves (as from `export.Exported.encoded`).
    max_density: kernels at most this dense are multiplied sparsely.
    bcsr_min_columns: see `Linear`.

  Returns:
    A callable ``model(inputs) -> logits`` with the Flax model's layouts.

  Raises:
    ValueError: for a model without a sparse forward here.
  """
  if name not in MODELS:
    raise ValueError(f'no sparse inference for model {name!r}; supported: '
                     f'{", ".join(sorted(MODELS))}')
  return MODELS[name](params, functools.partial(
      Linear, max_density=max_density, bcsr_min_columns=bcsr_min_columns))


def load(path: str, name: Optional[str] = None,
         max_density: float = DEFAULT_MAX_DENSITY,
         bcsr_min_columns: Optional[int] = DEFAULT_BCSR_MIN_COLUMNS
         ) -> _Model:
  """The sparse forward of an export file, without densifying its kernels.

  Args:
    path: a file written by `rigl_jax.deploy.export.export` (or its CLI).
    name: the model's name; default: the file's ``metadata['model']['name']``
      (the CLI stores it).
    max_density: kernels at most this dense are multiplied sparsely.
    bcsr_min_columns: see `Linear`.

  Returns:
    A callable ``model(inputs) -> logits``.
  """
  exported = export_lib.read(path)
  if name is None:
    name = exported.metadata.get('model', {}).get('name')
    if name is None:
      raise ValueError(f'{path} does not name its model; pass name=')
  return build(name, exported.encoded('params'), max_density,
               bcsr_min_columns)
