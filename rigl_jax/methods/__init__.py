"""Sparse-training methods and their registry.

A method is a `Method` object (see `base`). The registry maps a name to a
factory whose keyword arguments are the method's hyperparameters; `sparsify`
looks names up here and passes each factory the keyword arguments it
declares, so a new method is one file and one `register` call:

>>> import jax.numpy as jnp
>>> from rigl_jax import methods
>>> def weight_scores(weight, grad, aux, key):
...   return jnp.abs(weight)
>>> methods.register('by_weight', lambda: methods.DropAndGrow(
...     'by_weight', weight_scores))
>>> 'by_weight' in methods.names()
True
>>> methods.unregister('by_weight')
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any, Union

from rigl_jax.methods.base import DropAndGrow
from rigl_jax.methods.base import MagnitudePruning
from rigl_jax.methods.base import MaskContext
from rigl_jax.methods.base import Method
from rigl_jax.methods.dense import dense
from rigl_jax.methods.granet import granet_method
from rigl_jax.methods.pruning import pruning
from rigl_jax.methods.rigl import rigl
from rigl_jax.methods.set import set_method
from rigl_jax.methods.snfs import snfs
from rigl_jax.methods.snip import snip
from rigl_jax.methods.srigl import srigl_method
from rigl_jax.methods.static import static
from rigl_jax.methods.topkast import topkast_method

_REGISTRY: dict[str, Callable[..., Method]] = {}


def register(name: str, factory: Callable[..., Method]) -> None:
  """Registers ``factory(**hyperparameters) -> Method`` under ``name``.

  Raises:
    ValueError: if the name is taken.
  """
  if name in _REGISTRY:
    raise ValueError(f'a sparse method named {name!r} is already registered')
  _REGISTRY[name] = factory


def unregister(name: str) -> None:
  """Removes a registered method (for tests and notebooks)."""
  _REGISTRY.pop(name, None)


def names() -> tuple[str, ...]:
  """The registered method names, in registration order."""
  return tuple(_REGISTRY)


def hyperparameters(name: str) -> dict[str, Any]:
  """``{keyword: default}`` a registered method's factory takes."""
  sig = inspect.signature(_REGISTRY[name])
  return {k: p.default for k, p in sig.parameters.items()
          if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)}


def all_hyperparameters() -> dict[str, Any]:
  """Every registered method's hyperparameters (name -> default)."""
  out: dict[str, Any] = {}
  for name in _REGISTRY:
    out.update(hyperparameters(name))
  return out


def get_method(method: Union[str, Method], **kwargs: Any) -> Method:
  """A method object from a name (with its hyperparameters) or an object.

  Args:
    method: a registered name or a `Method`.
    **kwargs: hyperparameters; each is passed to the factory that declares
      it, and those of other registered methods are ignored (a config holds
      the defaults of all of them).

  Raises:
    ValueError: for an unknown name (listing the valid ones), an argument no
      registered method takes, or an object that is not a `Method`.
  """
  known = all_hyperparameters()
  # (`set` here is the submodule methods.set, not the builtin.)
  unknown = sorted(k for k in kwargs if k not in known)
  if unknown:
    raise ValueError(f'unknown sparse method argument(s) {unknown}; valid '
                     f'ones are {sorted(known)}')
  if isinstance(method, Method):
    return method
  if not isinstance(method, str) or method not in _REGISTRY:
    raise ValueError(f'unknown sparse method {method!r}; valid choices are '
                     f'{list(_REGISTRY)} or a rigl_jax.methods.Method')
  own = hyperparameters(method)
  return _REGISTRY[method](**{k: v for k, v in kwargs.items() if k in own})


for _name, _factory in (('dense', dense), ('static', static),
                        ('set', set_method), ('snfs', snfs), ('rigl', rigl),
                        ('pruning', pruning), ('snip', snip),
                        ('srigl', srigl_method), ('granet', granet_method),
                        ('topkast', topkast_method)):
  register(_name, _factory)

# The built-in names (the registry may grow).
METHODS = names()

__all__ = ('DropAndGrow', 'MagnitudePruning', 'MaskContext', 'METHODS',
           'Method', 'all_hyperparameters', 'get_method', 'hyperparameters',
           'names', 'register', 'unregister')
