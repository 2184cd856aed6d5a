"""Layers of a sparse leaf: one per leaf, or one per slice of a stacked leaf.

Models built with ``nn.scan`` / ``nn.vmap`` (MaxText, big_vision, t5x style)
keep the parameters of all their blocks in one leaf, stacked along an axis.
``sparsify(..., stacked={path_regex: axis})`` declares such leaves; each
slice along ``axis`` is then a layer of its own for the sparsity
distribution, the initial masks, the drop/grow counts, top-k and pruning, so
a scanned model gets the masks of the same model unrolled.

Inside the core every sparse leaf is handled in its *layer view*: an array
``(L, *layer_shape)`` with the stack axis moved to the front (``L = 1`` for
an ordinary leaf), so one rule written for a layer is `jax.vmap`-ed over
``L``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Optional

import jax.numpy as jnp
import numpy as np

Stacked = Optional[Mapping[str, int]]


def parse_stacked(stacked: Stacked) -> list[tuple[re.Pattern, int]]:
  """Validates ``{path_regex: axis}`` and compiles it.

  Raises:
    ValueError: for anything but a mapping of regexes to integer axes.
  """
  if stacked is None:
    return []
  if not isinstance(stacked, Mapping):
    raise ValueError(f'stacked must be a mapping {{path regex: axis}}, e.g. '
                     f"{{'layers/': 0}}; got {stacked!r}")
  out = []
  for pattern, axis in stacked.items():
    if not isinstance(axis, (int, np.integer)) or isinstance(axis, bool):
      raise ValueError(f'stacked[{pattern!r}] must be an integer axis; got '
                       f'{axis!r}')
    try:
      out.append((re.compile(pattern), int(axis)))
    except (TypeError, re.error) as e:
      raise ValueError(f'stacked has an invalid path regex {pattern!r}: {e}'
                       ) from None
  return out


def stack_axis(rules: list[tuple[re.Pattern, int]], path: str,
               shape: tuple[int, ...]) -> Optional[int]:
  """The stack axis of the leaf at ``path`` (first matching rule), or None.

  Raises:
    ValueError: if the axis does not exist, or leaves a layer with fewer than
      one dimension.
  """
  for pattern, axis in rules:
    if pattern.search(path):
      ndim = len(shape)
      if not -ndim <= axis < ndim or ndim < 2:
        raise ValueError(
            f'stacked declares axis {axis} for {path} with shape '
            f'{tuple(shape)}; a stacked leaf needs that axis and at least one '
            'more dimension')
      return axis % ndim
  return None


def layer_shape(shape: tuple[int, ...], axis: Optional[int]
                ) -> tuple[int, ...]:
  """The shape of one layer of a leaf."""
  shape = tuple(int(d) for d in shape)
  return shape if axis is None else shape[:axis] + shape[axis + 1:]


def num_layers(shape: tuple[int, ...], axis: Optional[int]) -> int:
  return 1 if axis is None else int(shape[axis])


def to_layers(x: Any, axis: Optional[int]) -> Any:
  """Leaf -> layer view ``(L, *layer_shape)``."""
  return x[None] if axis is None else jnp.moveaxis(x, axis, 0)


def from_layers(x: Any, axis: Optional[int]) -> Any:
  """Layer view -> leaf."""
  return x[0] if axis is None else jnp.moveaxis(x, 0, axis)
