"""Compact export of a trained sparse model: a file that grows with nnz.

`export` writes a Flax variables tree (``params`` and, if any,
``batch_stats``) into one ``.npz`` file. Each candidate sparse leaf (a kernel
with ndim >= 2, or a leaf whose mask is not None) is viewed as a 2-D matrix
``(prod(shape[:-1]), shape[-1])`` -- ``(fan_in, fan_out)`` for a dense kernel,
the im2col matrix ``(kh * kw * cin, cout)`` for a convolution -- and stored in
whichever encoding is smallest for that leaf (``condensed`` first where
it applies):

- ``csr``: the nonzero values in row-major order, their column indices and
  the row pointers, each index array in the narrowest unsigned integer type
  that holds it;
- ``bitmask``: ``np.packbits`` of the support (one bit per weight) plus the
  nonzero values in row-major order;
- ``condensed``: for a kernel whose every output unit (column of the 2-D
  view) has the same number ``k`` of nonzeros or none -- the constant
  fan-in of SRigL (Lasby et al. 2024) -- each unit's ``k`` values and their
  input (row) indices as ``(fan_out, k)`` arrays, plus a bit per unit that
  says whether it is live (ablated units hold zero padding); no row
  pointers, and `rigl_jax.deploy.sparse_inference` multiplies it with a
  dense-shaped gather kernel. Chosen for every constant fan-in kernel
  smaller than dense, even where ``bitmask`` would be a little smaller
  (~15% at 90% sparsity), for that speed;
- ``dense``: the array as it is (also used for every other leaf).

The support of a leaf is where its *bit pattern* is nonzero, so ``-0.0`` and
weights outside the masks are kept and `load` rebuilds the tree bit for bit:
the same nested dicts, shapes, dtypes and values (as numpy arrays, which
Flax's ``apply`` accepts). Non-numpy dtypes (``bfloat16``) are stored as
their raw bits.

`pack_masks` / `unpack_masks` bit-pack mask pytrees (pure numpy), e.g. to
store masks compactly next to a checkpoint.

This module is the file format and needs numpy alone (``ml_dtypes`` for
bfloat16 leaves); exporting a finished run from its checkpoint is
`rigl_jax.deploy.cli` (``python -m rigl_jax.deploy --workdir DIR``).

Example:
  >>> import numpy as np
  >>> kernel = np.zeros((64, 32), np.float32); kernel[::7, ::5] = 1.0
  >>> params = {'dense': {'kernel': kernel, 'bias': np.ones(32, np.float32)}}
  >>> summary = export('/tmp/doctest_export.npz', params)
  >>> summary.leaves['params/dense/kernel'].encoding  # 10 inputs per unit
  'condensed'
  >>> export('/tmp/doctest_export.npz', params, condensed=False).leaves[
  ...     'params/dense/kernel'].encoding
  'csr'
  >>> restored = load('/tmp/doctest_export.npz')['params']
  >>> bool(np.array_equal(restored['dense']['kernel'], kernel))
  True
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Mapping
from typing import Any, Callable, Optional, Sequence

import numpy as np

FORMAT = 'rigl_jax.export'
VERSION = 2  # 2: the 'condensed' encoding; files of version 1 still load
READABLE_VERSIONS = (1, 2)
ENCODINGS = ('dense', 'csr', 'bitmask', 'condensed')
_META_KEY = '__meta__'


# ---------------------------------------------------------------------------
# Bit-packed masks.


def _is_packed(x: Any) -> bool:
  return isinstance(x, Mapping) and set(x) == {'bits', 'shape'}


def _map(fn: Callable[[Any], Any], tree: Any,
         is_leaf: Callable[[Any], bool] = lambda x: False) -> Any:
  """``fn`` on the leaves of nested dicts / lists / tuples (None is a leaf)."""
  if tree is None or is_leaf(tree):
    return fn(tree)
  if isinstance(tree, Mapping):
    return {k: _map(fn, v, is_leaf) for k, v in tree.items()}
  if isinstance(tree, (list, tuple)):
    return type(tree)(_map(fn, v, is_leaf) for v in tree)
  return fn(tree)


def _dtype(name: str) -> np.dtype:
  """The numpy dtype of a stored dtype name (bfloat16 via ml_dtypes)."""
  try:
    return np.dtype(name)
  except TypeError:
    import ml_dtypes  # pylint: disable=g-import-not-at-top
    return np.dtype(getattr(ml_dtypes, name))


def pack_masks(masks: Any) -> Any:
  """Bit-packs a mask pytree: one bit per weight instead of one byte.

  Args:
    masks: a pytree of bool arrays (numpy or jax) and None leaves, as returned
      by `rigl_jax.get_masks`.

  Returns:
    The same tree with every mask replaced by a dict
    ``{'bits': uint8[ceil(size / 8)], 'shape': int64[ndim]}`` (the flattened
    mask through ``np.packbits``, big bit order) and every None left None.
    Plain dicts of numpy arrays, so the result can go into an ``.npz`` file or
    an orbax checkpoint.

  Example:
    >>> import numpy as np
    >>> packed = pack_masks({'a': np.eye(3, dtype=bool), 'b': None})
    >>> packed['a']['bits'], packed['b']
    (array([136, 128], dtype=uint8), None)
    >>> bool(np.array_equal(unpack_masks(packed)['a'], np.eye(3)))
    True
  """

  def pack(mask):
    if mask is None:
      return None
    mask = np.asarray(mask, dtype=bool)
    return {'bits': np.packbits(mask.reshape(-1)),
            'shape': np.asarray(mask.shape, np.int64)}

  return _map(pack, masks)


def unpack_masks(packed: Any) -> Any:
  """Inverse of `pack_masks`.

  Args:
    packed: a tree as returned by `pack_masks` (its packed leaves may be numpy
      or jax arrays, e.g. restored from a checkpoint).

  Returns:
    The masks: a bool numpy array of the stored shape per packed leaf, None
    where the packed tree has None.
  """

  def unpack(leaf):
    if leaf is None:
      return None
    shape = tuple(int(d) for d in np.asarray(leaf['shape']))
    bits = np.asarray(leaf['bits'], np.uint8)
    count = math.prod(shape)
    return np.unpackbits(bits, count=count).astype(bool).reshape(shape)

  return _map(unpack, packed, is_leaf=_is_packed)


# ---------------------------------------------------------------------------
# Encoding one leaf.


def _uint_for(max_value: int) -> np.dtype:
  """The narrowest unsigned integer dtype that holds ``max_value``."""
  for dtype in (np.uint8, np.uint16, np.uint32):
    if max_value <= np.iinfo(dtype).max:
      return np.dtype(dtype)
  return np.dtype(np.uint64)


def _raw_dtype(dtype: np.dtype) -> Optional[np.dtype]:
  """The unsigned integer type of the same width, for bit-level access."""
  if dtype.itemsize in (1, 2, 4, 8):
    return np.dtype(f'u{dtype.itemsize}')
  return None


def matrix_shape(shape: Sequence[int]) -> tuple[int, int]:
  """The 2-D view of a kernel: ``(prod(shape[:-1]), shape[-1])``."""
  shape = tuple(shape)
  return math.prod(shape[:-1]), shape[-1]


@dataclasses.dataclass(frozen=True)
class EncodedLeaf:
  """One leaf as stored in an export file.

  Attributes:
    path: keys from the collection's root to the leaf.
    shape: the leaf's shape.
    dtype: the leaf's dtype.
    encoding: one of `ENCODINGS`.
    arrays: ``{'dense': a}``, ``{'values', 'indices', 'indptr'}`` (csr),
      ``{'values', 'bits'}`` (bitmask) or ``{'values', 'indices', 'live'}``
      (condensed: ``(fan_out, k)`` values and row indices, ``packbits`` of
      the live units); ``values`` and ``dense`` hold raw bits (unsigned
      integers) when ``dtype`` is not a builtin numpy type.
  """
  path: tuple[str, ...]
  shape: tuple[int, ...]
  dtype: np.dtype
  encoding: str
  arrays: dict[str, np.ndarray]

  @property
  def size(self) -> int:
    return math.prod(self.shape)

  @property
  def nnz(self) -> int:
    """Stored values (every element for a dense leaf; for a condensed
    leaf every mask position of its live units, zeros included)."""
    if self.encoding == 'dense':
      return self.size
    if self.encoding == 'condensed':
      return int(self.live().sum()) * int(self.arrays['values'].shape[1])
    return int(self.arrays['values'].size)

  def live(self) -> np.ndarray:
    """Condensed leaves: which output units have inputs (bool, fan_out)."""
    cols = matrix_shape(self.shape)[1]
    return np.unpackbits(self.arrays['live'], count=cols).astype(bool)

  @property
  def nbytes(self) -> int:
    """Bytes of the stored arrays."""
    return sum(a.nbytes for a in self.arrays.values())

  @property
  def dense_nbytes(self) -> int:
    return self.size * self.dtype.itemsize

  def _typed(self, a: np.ndarray) -> np.ndarray:
    return a if a.dtype == self.dtype else a.view(self.dtype)

  def values(self) -> np.ndarray:
    """The stored nonzeros in row-major order (typed), for sparse leaves."""
    if self.encoding == 'condensed':
      return self.to_dense().reshape(-1)[self.support().reshape(-1)]
    return self._typed(self.arrays['values'])

  def to_dense(self) -> np.ndarray:
    """The leaf, bit for bit."""
    if self.encoding == 'dense':
      return self._typed(self.arrays['dense']).reshape(self.shape)
    out = np.zeros(self.size, self.dtype)
    if self.encoding == 'condensed':
      rows, cols = matrix_shape(self.shape)
      live = np.nonzero(self.live())[0]
      idx = self.arrays['indices'][live].astype(np.int64)
      out[(idx * cols + live[:, None]).reshape(-1)] = self._typed(
          self.arrays['values'][live]).reshape(-1)
      return out.reshape(self.shape)
    if self.encoding == 'csr':
      rows, cols = matrix_shape(self.shape)
      indptr = self.arrays['indptr'].astype(np.int64)
      row_of = np.repeat(np.arange(rows, dtype=np.int64), np.diff(indptr))
      out[row_of * cols + self.arrays['indices']] = self.values()
    else:
      out[self.support().reshape(-1)] = self.values()
    return out.reshape(self.shape)

  def support(self) -> np.ndarray:
    """Where the leaf is stored as nonzero: a bool array of ``shape``."""
    if self.encoding == 'bitmask':
      return np.unpackbits(self.arrays['bits'], count=self.size).astype(
          bool).reshape(self.shape)
    if self.encoding in ('dense', 'condensed'):
      return _support(self.to_dense())
    rows, cols = matrix_shape(self.shape)
    out = np.zeros((rows, cols), bool)
    row_of = np.repeat(np.arange(rows), np.diff(self.arrays['indptr']))
    out[row_of, self.arrays['indices']] = True
    return out.reshape(self.shape)

  def csr(self, index_dtype: Any = np.int32
          ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The 2-D view in CSR form, without building the dense array.

    Args:
      index_dtype: integer dtype of the returned index arrays (int32 or
        int64 for scipy; widened automatically if nnz needs it).

    Returns:
      ``(indptr, indices, values)`` of ``matrix_shape(shape)``; the values
      keep the leaf's dtype.
    """
    index_dtype = np.dtype(index_dtype)
    if self.nnz > np.iinfo(index_dtype).max:
      index_dtype = np.dtype(np.int64)
    if self.encoding == 'csr':
      return (self.arrays['indptr'].astype(index_dtype),
              self.arrays['indices'].astype(index_dtype), self.values())
    rows, cols = matrix_shape(self.shape)
    support = self.support().reshape(rows, cols)
    values = (self.values() if self.encoding == 'bitmask'
              else self.to_dense().reshape(rows, cols)[support])
    indptr = np.zeros(rows + 1, index_dtype)
    np.cumsum(np.count_nonzero(support, axis=1), out=indptr[1:])
    indices = np.nonzero(support)[1].astype(index_dtype)
    return indptr, indices, values


def _support(a: np.ndarray) -> np.ndarray:
  """Where the bit pattern of ``a`` is nonzero (so -0.0 counts)."""
  raw = _raw_dtype(a.dtype)
  return (a.view(raw) if raw is not None else a) != 0


def _storable(a: np.ndarray) -> np.ndarray:
  """``a`` itself for builtin numpy dtypes, else its raw bits."""
  return a if a.dtype.isbuiltin == 1 else a.view(_raw_dtype(a.dtype))


def encode_leaf(path: tuple[str, ...], leaf: Any, sparse: bool,
                encoding: Optional[str] = None,
                condensed_ok: bool = True,
                mask: Any = None) -> EncodedLeaf:
  """Encodes one leaf: condensed where it applies, else the smallest.

  Args:
    path: the leaf's keys.
    leaf: an array (numpy, jax or scalar).
    sparse: whether the leaf may be stored sparse (it needs ndim >= 1).
    encoding: force one of `ENCODINGS` (tests, inspection); None:
      ``condensed`` for a constant fan-in kernel (if ``condensed_ok``),
      else the smallest in bytes.
    condensed_ok: whether the automatic choice may pick ``condensed``.
    mask: optional bool array of the leaf's shape (its sparse-training
      mask): ``condensed`` then stores every position of the mask, weights
      that are exactly zero included, so a constant fan-in mask stays
      condensed when training left some of its weights at zero (e.g.
      inputs from an ablated unit, whose gradient is zero).

  Returns:
    The `EncodedLeaf`.
  """
  a = np.asarray(leaf)
  if not a.flags.c_contiguous:
    a = a.copy(order='C')
  shape = tuple(int(d) for d in a.shape)
  if a.ndim == 0 or _raw_dtype(a.dtype) is None:
    sparse = False
  if not sparse or encoding == 'dense':
    return EncodedLeaf(path, shape, a.dtype, 'dense',
                       {'dense': _storable(a).reshape(-1)})
  rows, cols = matrix_shape(shape)
  flat = a.reshape(-1)
  support = _support(flat)
  values = _storable(flat[support])
  nnz = int(values.size)
  index = _uint_for(max(cols - 1, 0))
  pointer = _uint_for(nnz)
  positions = support.reshape(rows, cols)  # what condensed stores
  if mask is not None and np.shape(mask) == shape:
    positions = positions | np.asarray(mask, bool).reshape(rows, cols)
  fan_in = np.count_nonzero(positions, axis=0)
  k = int(fan_in.max(initial=0))
  constant = bool(np.all((fan_in == 0) | (fan_in == k))) and k > 0
  if encoding is None and not condensed_ok:
    constant = False
  sizes = {
      'dense': a.nbytes,
      'csr': values.nbytes + nnz * index.itemsize + (rows + 1) *
             pointer.itemsize,
      'bitmask': values.nbytes + (a.size + 7) // 8,
      'condensed': (cols * k * (values.itemsize + _uint_for(
          max(rows - 1, 0)).itemsize) + (cols + 7) // 8) if constant
                   else math.inf,
  }
  if encoding is None and constant and sizes['condensed'] < sizes['dense']:
    encoding = 'condensed'  # what sparse_inference multiplies fastest
  if encoding is None:
    encoding = min(ENCODINGS, key=sizes.__getitem__)  # ties: first listed
  if encoding == 'condensed':
    if not constant:
      raise ValueError(
          f'leaf {"/".join(path)} has no constant fan-in (its units have '
          f'{sorted(set(fan_in.tolist()))[:6]} inputs), so it cannot be '
          "stored 'condensed'")
    return _condensed(path, a, positions, k)
  if encoding == 'dense':
    return EncodedLeaf(path, shape, a.dtype, 'dense',
                       {'dense': _storable(a).reshape(-1)})
  if encoding == 'bitmask':
    return EncodedLeaf(path, shape, a.dtype, 'bitmask',
                       {'values': values, 'bits': np.packbits(support)})
  if encoding != 'csr':
    raise ValueError(f'unknown encoding {encoding!r}; valid choices are '
                     f'{list(ENCODINGS)}')
  support2d = support.reshape(rows, cols)
  indptr = np.zeros(rows + 1, pointer)
  np.cumsum(np.count_nonzero(support2d, axis=1), out=indptr[1:])
  indices = np.nonzero(support2d)[1].astype(index)
  return EncodedLeaf(path, shape, a.dtype, 'csr',
                     {'values': values, 'indices': indices, 'indptr': indptr})


def _condensed(path: tuple[str, ...], a: np.ndarray, support2d: np.ndarray,
               k: int) -> EncodedLeaf:
  """The condensed encoding of a constant fan-in leaf (see the module)."""
  rows, cols = support2d.shape
  live = support2d.any(axis=0)
  # Column-major order: each unit's inputs, ascending.
  cols_of, rows_of = np.nonzero(support2d.T)
  indices = np.zeros((cols, k), _uint_for(max(rows - 1, 0)))
  stored = _storable(a.reshape(rows, cols))
  values = np.zeros((cols, k), stored.dtype)
  live_cols = np.nonzero(live)[0]
  indices[live_cols] = rows_of.reshape(-1, k)
  values[live_cols] = stored[rows_of, cols_of].reshape(-1, k)
  return EncodedLeaf(path, tuple(a.shape), a.dtype, 'condensed',
                     {'values': values, 'indices': indices,
                      'live': np.packbits(live)})


# ---------------------------------------------------------------------------
# Trees <-> files.


def _skeleton(tree: Any, path: tuple[str, ...], out: list) -> Any:
  """Nested dicts mirroring ``tree`` with leaf ids; appends (path, leaf)."""
  if isinstance(tree, Mapping):
    return {str(k): _skeleton(v, path + (str(k),), out)
            for k, v in tree.items()}
  if tree is None or isinstance(tree, (list, tuple)):
    raise TypeError(f'export supports trees of nested dicts of arrays; '
                    f'{"/".join(path) or "the root"} is {type(tree).__name__}')
  out.append((path, tree))
  return len(out) - 1


def _fill(skeleton: Any, leaves: Sequence[np.ndarray]) -> Any:
  if isinstance(skeleton, dict):
    return {k: _fill(v, leaves) for k, v in skeleton.items()}
  return leaves[skeleton]


@dataclasses.dataclass(frozen=True)
class Exported:
  """The contents of an export file.

  Attributes:
    trees: per collection (``'params'``, ``'batch_stats'``), nested dicts
      whose leaves are indices into ``leaves``.
    leaves: every encoded leaf.
    metadata: what the writer stored (e.g. the model's name and kwargs).
  """
  trees: dict[str, Any]
  leaves: list[EncodedLeaf]
  metadata: dict[str, Any]

  def variables(self) -> dict[str, Any]:
    """The Flax variables, bit for bit: ``{'params': ..., ...}``."""
    dense = [leaf.to_dense() for leaf in self.leaves]
    return {name: _fill(tree, dense) for name, tree in self.trees.items()}

  def encoded(self, collection: str = 'params') -> Any:
    """The collection's tree with `EncodedLeaf` leaves (nothing decoded)."""
    return _fill(self.trees[collection], self.leaves)


@dataclasses.dataclass(frozen=True)
class ExportSummary:
  """What `export` wrote.

  Attributes:
    path: the file written.
    dense_bytes: bytes of all leaves stored densely.
    file_bytes: size of the file.
    leaves: per leaf path string (``'params/dense0/kernel'``): its
      `EncodedLeaf`.
  """
  path: str
  dense_bytes: int
  file_bytes: int
  leaves: dict[str, EncodedLeaf]

  def table(self) -> str:
    """One line per leaf and a total, for printing."""
    lines = [f'{"leaf":<40} {"shape":>18} {"density":>8} {"encoding":>8} '
             f'{"bytes":>11} {"dense":>11}']
    for name, leaf in self.leaves.items():
      density = leaf.nnz / max(leaf.size, 1)
      lines.append(f'{name:<40} {str(leaf.shape):>18} {density:8.4f} '
                   f'{leaf.encoding:>8} {leaf.nbytes:11d} '
                   f'{leaf.dense_nbytes:11d}')
    lines.append(f'dense bytes: {self.dense_bytes}  exported file bytes: '
                 f'{self.file_bytes}  ({self.file_bytes / self.dense_bytes:.3f}'
                 f' of dense, {self.dense_bytes / self.file_bytes:.2f}x '
                 'smaller)')
    return '\n'.join(lines)


def export(path: str, params: Any, *, batch_stats: Any = None,
           masks: Any = None, metadata: Optional[dict[str, Any]] = None,
           compressed: bool = False, condensed: bool = True
           ) -> ExportSummary:
  """Writes ``params`` (and ``batch_stats``) compactly to ``path``.

  Args:
    path: the file to write (an ``.npz`` archive, whatever its name).
    params: the Flax params: nested dicts of arrays.
    batch_stats: the ``batch_stats`` collection, if the model has one; always
      stored dense.
    masks: optional, a tree like ``params`` (as from `rigl_jax.get_masks`):
      only leaves with a mask may be stored sparse. Default: every leaf with
      ndim >= 2. Whatever the masks say, every stored value is kept (the
      support is where a weight is nonzero).
    metadata: JSON-serialisable information to keep in the file (the CLI
      stores the model's name, kwargs, number of classes and input shape,
      which `rigl_jax.deploy.sparse_inference.load` uses).
    compressed: zip-deflate the file (``np.savez_compressed``): smaller, and
      slower to write and read.
    condensed: store constant fan-in kernels ``condensed`` (False: the
      smallest other encoding, e.g. to compare the two in inference).

  Returns:
    An `ExportSummary`.
  """
  collections = {'params': params}
  if batch_stats is not None:
    collections['batch_stats'] = batch_stats
  if masks is None:
    sparse_paths, mask_of = None, {}
  else:
    flags = []
    _skeleton(_map(lambda m: m is not None, masks), (), flags)
    sparse_paths = {p for p, flag in flags if flag}
    found_masks = []
    _skeleton(_map(lambda m: 0 if m is None else m, masks), (), found_masks)
    mask_of = {p: m for p, m in found_masks if p in sparse_paths}
  trees, found, collection_of = {}, [], []
  for name, tree in collections.items():
    trees[name] = _skeleton(tree, (), found)
    collection_of += [name] * (len(found) - len(collection_of))
  encoded, arrays, entries, names = [], {}, [], {}
  for (leaf_path, leaf), name in zip(found, collection_of):
    if name != 'params':
      sparse = False
    elif sparse_paths is None:
      sparse = np.ndim(leaf) >= 2
    else:
      sparse = leaf_path in sparse_paths
    leaf = encode_leaf(leaf_path, leaf, sparse, condensed_ok=condensed,
                       mask=mask_of.get(leaf_path) if sparse else None)
    for key, a in leaf.arrays.items():
      arrays[f'leaf{len(encoded)}.{key}'] = a
    entries.append({'path': list(leaf.path), 'shape': list(leaf.shape),
                    'dtype': leaf.dtype.name, 'encoding': leaf.encoding})
    names['/'.join((name,) + leaf_path)] = leaf
    encoded.append(leaf)
  meta = {'format': FORMAT, 'version': VERSION, 'trees': trees,
          'leaves': entries, 'metadata': metadata or {}}
  arrays[_META_KEY] = np.frombuffer(json.dumps(meta).encode(), np.uint8)
  with open(path, 'wb') as f:  # a file object: numpy adds no extension
    (np.savez_compressed if compressed else np.savez)(f, **arrays)
  return ExportSummary(
      path=path, dense_bytes=sum(l.dense_nbytes for l in encoded),
      file_bytes=os.path.getsize(path), leaves=names)


def read(path: str) -> Exported:
  """Reads an export file without decoding its leaves.

  Args:
    path: a file written by `export`.

  Returns:
    The `Exported` contents.

  Raises:
    ValueError: if the file is not an export file of a known version.
  """
  with np.load(path, allow_pickle=False) as f:
    if _META_KEY not in f.files:
      raise ValueError(f'{path} is not a rigl_jax export file')
    meta = json.loads(bytes(f[_META_KEY]).decode())
    if (meta.get('format') != FORMAT or
        meta.get('version') not in READABLE_VERSIONS):
      raise ValueError(f'{path}: unsupported export format '
                       f'{meta.get("format")!r} version {meta.get("version")}')
    leaves = []
    for i, entry in enumerate(meta['leaves']):
      keys = {'dense': ('dense',), 'csr': ('values', 'indices', 'indptr'),
              'bitmask': ('values', 'bits'),
              'condensed': ('values', 'indices', 'live')}[entry['encoding']]
      leaves.append(EncodedLeaf(
          path=tuple(entry['path']), shape=tuple(entry['shape']),
          dtype=_dtype(entry['dtype']),
          encoding=entry['encoding'],
          arrays={k: f[f'leaf{i}.{k}'] for k in keys}))
  return Exported(trees=meta['trees'], leaves=leaves,
                  metadata=meta['metadata'])


def load(path: str) -> dict[str, Any]:
  """Rebuilds the exported variables exactly.

  Args:
    path: a file written by `export`.

  Returns:
    ``{'params': ..., 'batch_stats': ...}`` (``batch_stats`` only if it was
    exported): the same nested dicts, shapes, dtypes and bits as exported,
    with numpy array leaves; pass it to ``model.apply`` as it is.
  """
  return read(path).variables()
