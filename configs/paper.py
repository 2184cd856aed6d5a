"""Shared pieces of the paper configs: argument parsing and method presets.

Paper configs take an optional argument after the file name, e.g.
  python main.py --config configs/imagenet_resnet50.py:method=set,dist=uniform,sparsity=0.9,mult=5
with keys ``method`` (dense, static, set, snfs, rigl, pruning),
``dist`` (uniform, erk), ``sparsity`` and ``mult`` (training length).
"""

from __future__ import annotations

from collections.abc import Sequence

import ml_collections

from rigl_jax import methods as methods_lib

# The method names are the core's registry (rigl_jax.methods).
METHODS = methods_lib.METHODS
DISTRIBUTIONS = ('uniform', 'erk')
KEYS = ('method', 'dist', 'sparsity', 'mult')


def parse(arg: str | None, **defaults) -> dict:
  """``'k=v,k=v'`` -> dict over ``defaults``; one clear error on bad input."""
  out = dict(defaults)
  for item in filter(None, (arg or '').split(',')):
    key, sep, value = item.partition('=')
    if not sep or key not in KEYS:
      raise ValueError(f'bad config argument {item!r}; expected key=value '
                       f'with key in {list(KEYS)}')
    out[key] = value
  if out['method'] not in METHODS:
    raise ValueError(f"unknown method {out['method']!r}; valid: "
                     f'{list(METHODS)}')
  if out['dist'] not in DISTRIBUTIONS:
    raise ValueError(f"unknown dist {out['dist']!r}; valid: "
                     f'{list(DISTRIBUTIONS)}')
  out['sparsity'] = float(out['sparsity'])
  out['mult'] = float(out['mult'])
  return out


def sparsity_config(method: str, dist: str, sparsity: float, *,
                    update_freq: int, first_layer: str | None,
                    drop_fraction: float = 0.3,
                    end_step: int | None = None,
                    dense: Sequence[str] = (),
                    pruning_steps: tuple[int, int, int] | None = None
                    ) -> ml_collections.ConfigDict:
  """``config.sparsity`` for one method, as the paper's code sets it.

  Args:
    method: one of `METHODS`.
    dist: 'uniform' or 'erk'.
    sparsity: the target.
    update_freq: steps between mask updates.
    first_layer: kernel path of the first layer, kept dense with the uniform
      distribution as in the reference code (None: no such rule).
    drop_fraction: initial drop fraction (cosine schedule).
    end_step: last mask-update step (None: ``end_fraction`` 0.75 of
      training).
    dense: path regexes (full match) of kernels kept dense whatever the
      distribution (sparsity 0.0, left out of the distribution's budget).
    pruning_steps: (begin, end, frequency) of gradual pruning.
  """
  c = ml_collections.ConfigDict()
  c.method = method
  c.sparsity = 0.0 if method == 'dense' else sparsity
  c.distribution = dist
  c.update_freq = update_freq
  c.begin_step = 0
  c.end_step = ml_collections.config_dict.placeholder(int)
  if end_step is not None:
    c.end_step = end_step
  c.end_fraction = 0.75
  c.drop_fraction = drop_fraction
  c.drop_fraction_schedule = 'cosine'
  c.seed = 0
  keep_dense = list(dense)
  if dist == 'uniform' and first_layer and first_layer not in keep_dense:
    keep_dense.insert(0, first_layer)
  if keep_dense and method != 'dense':
    c.custom_sparsity = {path: 0.0 for path in keep_dense}
  if method == 'pruning' and pruning_steps:
    c.begin_step, c.end_step, c.update_freq = pruning_steps
  return c
