"""Leaf paths and the choice of which parameter leaves are sparse.

Per-layer choices in rigl_jax (which leaves are sparse, custom sparsities) are
rules on a leaf's *path string*: the keys from the root of the parameter
pytree to the leaf, joined by ``/`` (e.g. ``'Conv_0/kernel'`` for a linen
params dict, ``'linear1/kernel'`` for a ``flax.nnx`` state).
"""

from __future__ import annotations

import math
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
    The path string, e.g. ``'params/Dense_0/kernel'``. The attribute
    ``.value`` (the payload of a `flax.nnx.Variable`) is left out so that
    linen and nnx trees give the same names; a dict key ``'value'`` (an
    attention layer's value projection) is kept.
  """
  parts = [_key_str(k) for k in path
           if not (isinstance(k, jax.tree_util.GetAttrKey) and
                   k.name == 'value')]
  return '/'.join(parts)


def leaf_paths(tree: Any) -> list[str]:
  """Returns the path string of every leaf of ``tree``, in leaf order."""
  flat, _ = jax.tree_util.tree_flatten_with_path(tree)
  return [path_str(p) for p, _ in flat]


# Leaf names that are never weights to prune: biases, norm scales and
# offsets (Flax: ``bias``, ``scale``; Haiku: ``offset``; Keras-style
# ``gamma``/``beta``), and leaves under a normalisation module.
# Biases and norm parameters; learned position embeddings and class
# tokens (Flax/big_vision/timm names) are added to activations, not
# multiplied, and stay dense too.
_DENSE_NAME = re.compile(
    r'(bias|scale|offset|gamma|beta|pos_?embed\w*|posemb\w*|'
    r'position_?embed\w*|cls|cls_token)$', re.I)
_NORM_MODULE = re.compile(r'norm', re.I)


def can_be_sparse(leaf: Any) -> bool:
  """True for non-empty floating-point arrays with ndim >= 1.

  None, zero-size, integer and boolean leaves always pass through dense,
  whatever ``is_sparse`` says.
  """
  shape = getattr(leaf, 'shape', None)
  dtype = getattr(leaf, 'dtype', None)
  if shape is None or dtype is None or len(shape) < 1:
    return False
  return (math.prod(shape) > 0
          and jax.numpy.issubdtype(dtype, jax.numpy.floating))


def default_is_sparse(path: str, leaf: Any) -> bool:
  """The default rule: floating-point kernels and embeddings are sparse.

  A leaf is sparse when it has at least two dimensions (convolution and
  dense kernels, Flax's ``kernel``, ``embedding``), is not named like a bias
  or a norm parameter (``bias``, ``scale``, ``offset``, ``gamma``, ``beta``,
  of any shape: attention biases ``(heads, head_dim)`` and stacked
  LayerNorm scales ``(layers, d)`` stay dense), a learned position
  embedding or a class token (``pos_embed``, ``pos_embedding``,
  ``posemb``, ``position_embeddings``, ``cls``, ``cls_token``: added to
  the activations, not a layer's weights) and does not sit in a
  normalisation module (a path component containing ``norm``). The paper's
  set, the convolution and dense kernels, is what this selects in its models.

  Args:
    path: the leaf's path string.
    leaf: the parameter (an array or `jax.ShapeDtypeStruct`).

  Returns:
    Whether the leaf is sparse.

  Example:
    >>> import jax.numpy as jnp
    >>> from rigl_jax import paths
    >>> paths.default_is_sparse('attn/query/kernel', jnp.ones((8, 2, 4)))
    True
    >>> paths.default_is_sparse('attn/query/bias', jnp.ones((2, 4)))
    False
    >>> paths.default_is_sparse('LayerNorm_0/scale', jnp.ones((6, 8)))
    False
    >>> paths.default_is_sparse('pos_embed', jnp.ones((64, 8)))
    False
  """
  if not can_be_sparse(leaf) or len(leaf.shape) < 2:
    return False
  parts = path.split('/') if path else ['']
  if _DENSE_NAME.search(parts[-1]):
    return False
  return not any(_NORM_MODULE.search(p) for p in parts[:-1])


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


def flatten(tree: Any) -> tuple[list[tuple[str, Any]], Any]:
  """``[(path string, leaf)]`` and the treedef, with None as a leaf.

  Masks hold None for dense leaves; flattening the params with None as a
  leaf too keeps the two aligned when the params themselves hold None.
  """
  flat, treedef = jax.tree_util.tree_flatten_with_path(
      tree, is_leaf=lambda x: x is None)
  return [(path_str(p), x) for p, x in flat], treedef


def sparse_leaf_flags(params: Any, is_sparse: IsSparse = None) -> Any:
  """A pytree of Python bools shaped like ``params``: which leaves are sparse.

  None, zero-size and non-floating leaves are never sparse.
  """
  pred = make_is_sparse(is_sparse)
  flat, treedef = flatten(params)
  return jax.tree.unflatten(
      treedef, [can_be_sparse(x) and bool(pred(p, x)) for p, x in flat])
