"""Leaf paths and the choice of which parameter leaves are sparse.

Per-layer choices in rigl_jax (which leaves are sparse, custom sparsities) are
rules on a leaf's *path string*: the keys from the root of the parameter
pytree to the leaf, joined by ``/`` (e.g. ``'Conv_0/kernel'`` for a linen
params dict, ``'linear1/kernel'`` for a ``flax.nnx`` state).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any, Union

import jax

PathPredicate = Callable[[str, Any], bool]
IsSparse = Union[None, str, Sequence[str], PathPredicate]


def _key_str(key: Any) -> str:
  """Formats one pytree key (dict key, attribute, index) as a path component."""
  for attr in ('key', 'name', 'idx'):
    if hasattr(key, attr):
      return str(getattr(key, attr))
  return str(key)


def path_str(path: Sequence[Any]) -> str:
  """Joins a `jax.tree_util` key path into a ``/``-separated string.

  Args:
    path: a key path as given by `jax.tree_util.tree_flatten_with_path`.

  Returns:
    The path string, e.g. ``'params/Dense_0/kernel'``. Attribute keys named
    ``value`` (the payload of a `flax.nnx.Variable`) are left out so that
    linen and nnx trees give the same names.
  """
  parts = [_key_str(k) for k in path]
  return '/'.join(p for p in parts if p != 'value')


def leaf_paths(tree: Any) -> list[str]:
  """Returns the path string of every leaf of ``tree``, in leaf order."""
  flat, _ = jax.tree_util.tree_flatten_with_path(tree)
  return [path_str(p) for p, _ in flat]


def default_is_sparse(path: str, leaf: Any) -> bool:
  """The default rule: convolution and dense kernels (ndim >= 2) are sparse.

  Args:
    path: the leaf's path string (unused by the default rule).
    leaf: the parameter (an array or `jax.ShapeDtypeStruct`).

  Returns:
    True for leaves with at least two dimensions; biases, norm scales and
    other vectors stay dense.
  """
  del path
  return len(getattr(leaf, 'shape', ())) >= 2


def make_is_sparse(is_sparse: IsSparse) -> PathPredicate:
  """Normalises the ``is_sparse`` argument into a ``(path, leaf) -> bool``.

  Args:
    is_sparse: ``None`` for `default_is_sparse`; a regex or a list of regexes,
      matched with `re.search` against the path string (a leaf is sparse if
      any matches); or a callable ``(path, leaf) -> bool``.

  Returns:
    A predicate on (path string, leaf).

  Raises:
    ValueError: if ``is_sparse`` is of none of these kinds or a regex is
      invalid.
  """
  if is_sparse is None:
    return default_is_sparse
  if callable(is_sparse):
    return is_sparse
  patterns = [is_sparse] if isinstance(is_sparse, str) else list(is_sparse)
  try:
    compiled = [re.compile(p) for p in patterns]
  except (TypeError, re.error) as e:
    raise ValueError(
        f'is_sparse must be None, a callable (path, leaf) -> bool, or path '
        f'regexes; got {is_sparse!r} ({e})') from None
  return lambda path, leaf: any(c.search(path) for c in compiled)


def sparse_leaf_flags(params: Any, is_sparse: IsSparse = None) -> Any:
  """A pytree of Python bools shaped like ``params``: which leaves are sparse."""
  pred = make_is_sparse(is_sparse)
  return jax.tree_util.tree_map_with_path(
      lambda p, x: bool(pred(path_str(p), x)), params)
