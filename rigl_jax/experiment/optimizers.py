"""The optimizer of an experiment, from its config: learning-rate schedule,
inner optax optimizer, and the `rigl_jax.sparsify` that wraps it."""

from __future__ import annotations

from typing import Any

import jax
import ml_collections
import optax

import rigl_jax
from rigl_jax.experiment import steps as steps_lib

# Valid values of config.optimizer.name and config.optimizer.schedule (the
# config validation takes its choices from here).
OPTIMIZERS = ('sgd', 'adam')
LR_SCHEDULES = ('cosine', 'step', 'constant')


def create_learning_rate_fn(config: ml_collections.ConfigDict,
                            total_steps: int) -> optax.Schedule:
  """Linear warmup, then cosine decay or step decay (from the config)."""
  opt = config.optimizer
  base_lr = opt.learning_rate * config.data.batch_size / opt.get(
      'lr_reference_batch_size', config.data.batch_size)
  warmup = int(opt.warmup_fraction * total_steps)
  if opt.schedule == 'cosine':
    decay = optax.cosine_decay_schedule(base_lr, max(1, total_steps - warmup))
  elif opt.schedule == 'step':
    boundaries = {int(f * total_steps) - warmup: opt.step_decay_factor
                  for f in opt.step_decay_at}
    decay = optax.piecewise_constant_schedule(base_lr, boundaries)
  elif opt.schedule == 'constant':
    decay = optax.constant_schedule(base_lr)
  else:
    raise ValueError(f'unknown learning-rate schedule {opt.schedule!r}; valid '
                     f'choices are {list(LR_SCHEDULES)}')
  if warmup == 0:
    return decay
  return optax.join_schedules(
      [optax.linear_schedule(0.0, base_lr, warmup), decay], [warmup])


def sparsity_fields(config: ml_collections.ConfigDict,
                    total_steps: int) -> dict[str, Any]:
  """The ``config.sparsity`` fields for `rigl_jax.from_config`.

  ``end_step`` defaults to ``end_fraction`` (0.75) of training, as in the
  paper; ``end_fraction`` itself is not a transform field. An unset
  ``seed`` (the initial masks) is ``config.seed``.
  """
  fields = config.sparsity.to_dict()
  fields.pop('end_fraction', None)
  if fields.get('seed') is None:
    fields['seed'] = config.seed
  fields['end_step'] = steps_lib.end_step(config.sparsity, total_steps)
  return fields


def create_inner_optimizer(config: ml_collections.ConfigDict,
                           lr_fn: optax.Schedule
                           ) -> optax.GradientTransformation:
  """The optimizer `sparsify` wraps: SGD with (Nesterov) momentum or Adam,
  weight decay on kernels, optional global-norm clipping first."""
  opt = config.optimizer
  if opt.name == 'sgd':
    base = optax.sgd(lr_fn, momentum=opt.momentum or None,
                     nesterov=opt.nesterov)
  elif opt.name == 'adam':
    base = optax.adam(lr_fn)
  else:
    raise ValueError(f'unknown optimizer {opt.name!r}; valid choices are '
                     f'{list(OPTIMIZERS)}')
  decay_mask = lambda params: jax.tree.map(lambda p: p.ndim > 1, params)
  inner = optax.chain(
      optax.add_decayed_weights(opt.weight_decay, mask=decay_mask), base)
  if opt.get('grad_clip_norm'):
    inner = optax.chain(optax.clip_by_global_norm(opt.grad_clip_norm), inner)
  return inner


def create_optimizer(config: ml_collections.ConfigDict, total_steps: int,
                     lr_fn: optax.Schedule
                     ) -> optax.GradientTransformationExtraArgs:
  """`create_inner_optimizer` wrapped by `sparsify` from ``config.sparsity``."""
  return rigl_jax.from_config(create_inner_optimizer(config, lr_fn),
                              sparsity_fields(config, total_steps))
