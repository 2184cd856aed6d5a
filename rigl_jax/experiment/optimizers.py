"""The optimizer of an experiment, from its config: learning-rate schedule,
inner optax optimizer, and the `rigl_jax.sparsify` that wraps it."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import optax

import rigl_jax
from rigl_jax.experiment import models
from rigl_jax.experiment import steps as steps_lib

# Valid values of config.optimizer.name and config.optimizer.schedule (the
# config validation takes its choices from here).
OPTIMIZERS = ('sgd', 'adam', 'adamw')
LR_SCHEDULES = ('cosine', 'step', 'constant', 'rsqrt')


def step_multiplier_schedule(base_lr: float,
                             pairs: Sequence[Sequence[float]],
                             training_multiplier: float = 1.0
                             ) -> optax.Schedule:
  """The reference's ``LR_SCHEDULE``: (multiplier, start) pairs.

  The learning rate is ``base_lr`` times the multiplier of the last pair
  whose start has been reached (``step >= start``); before the first start
  it rises linearly from 0 to ``base_lr`` times the first multiplier (a
  first start of 0: no warm-up). Starts are steps of the 1x run and scale
  with ``training_multiplier``, as the reference scales its epochs
  (google-research/rigl ``rigl/imagenet_resnet/imagenet_train_eval.py``,
  ``set_lr_schedule`` and ``lr_schedule``).

  Args:
    base_lr: the learning rate that the multipliers scale.
    pairs: ``((multiplier, start step), ...)``, starts non-decreasing.
    training_multiplier: the run's length relative to 1x.

  Returns:
    An optax schedule.

  Example:
    >>> sched = step_multiplier_schedule(1.0, ((1.0, 10), (0.1, 30)), 2.0)
    >>> [round(float(sched(s)), 3) for s in (0, 10, 20, 59, 60)]
    [0.0, 0.5, 1.0, 1.0, 0.1]
  """
  starts = [float(s) * training_multiplier for _, s in pairs]
  values = [base_lr * float(m) for m, _ in pairs]

  def schedule(count):
    count = jnp.asarray(count, jnp.float32)
    lr = (values[0] * count / starts[0] if starts[0] > 0 else
          jnp.full_like(count, values[0]))
    for value, start in zip(values, starts):
      lr = jnp.where(count < start, lr, value)
    return lr

  return schedule


def create_learning_rate_fn(config: ml_collections.ConfigDict,
                            total_steps: int) -> optax.Schedule:
  """Linear warmup, then cosine, step, constant or rsqrt decay (config).

  With ``schedule='step'``, a non-empty ``step_multipliers`` (the
  reference's (multiplier, start step at 1x) pairs, warm-up included; see
  `step_multiplier_schedule`) replaces ``step_decay_at``,
  ``step_decay_factor`` and ``warmup_fraction``.
  """
  opt = config.optimizer
  base_lr = opt.learning_rate * config.data.batch_size / opt.get(
      'lr_reference_batch_size', config.data.batch_size)
  pairs = opt.get('step_multipliers') or ()
  if pairs:
    if opt.schedule != 'step' or opt.warmup_fraction:
      raise ValueError(
          'config.optimizer.step_multipliers needs schedule="step" and '
          'warmup_fraction=0 (the first pair\'s start is the warm-up); got '
          f'schedule={opt.schedule!r}, warmup_fraction='
          f'{opt.warmup_fraction!r}')
    return step_multiplier_schedule(
        base_lr, pairs, float(config.get('training_multiplier', 1.0)))
  warmup = int(opt.warmup_fraction * total_steps)
  if opt.schedule == 'cosine':
    decay = optax.cosine_decay_schedule(base_lr, max(1, total_steps - warmup))
  elif opt.schedule == 'step':
    boundaries = {int(f * total_steps) - warmup: opt.step_decay_factor
                  for f in opt.step_decay_at}
    decay = optax.piecewise_constant_schedule(base_lr, boundaries)
  elif opt.schedule == 'constant':
    decay = optax.constant_schedule(base_lr)
  elif opt.schedule == 'rsqrt':
    # lr * sqrt(warmup / step) after the warm-up, as the Flax lm1b and wmt
    # examples (`rsqrt_schedule(lr, shift=warmup_steps)` in their train.py).
    if warmup == 0:
      raise ValueError('optimizer.schedule="rsqrt" needs a warm-up: set '
                       'optimizer.warmup_fraction > 0')
    decay = lambda count: base_lr * (warmup / (count + warmup)) ** 0.5
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
  fields['stacked'] = models.config_stacked(config)  # a scanned model's
  return fields


def create_inner_optimizer(config: ml_collections.ConfigDict,
                           lr_fn: optax.Schedule
                           ) -> optax.GradientTransformation:
  """The optimizer `sparsify` wraps: SGD with (Nesterov) momentum, Adam or
  AdamW, weight decay on kernels, optional global-norm clipping first.

  ``weight_decay`` is an L2 term added to the gradients for ``sgd`` and
  ``adam`` (as the reference code's), and decoupled for ``adamw``
  (``lr(t) * weight_decay * w`` subtracted, optax's `adamw`).
  """
  opt = config.optimizer
  # The leaves the core makes sparse by default (kernels, embeddings):
  # never biases, norm scales, position embeddings or class tokens,
  # whatever their rank (stacked blocks).
  decay_mask = lambda params: jax.tree_util.tree_map_with_path(
      lambda path, p: rigl_jax.default_is_sparse(
          rigl_jax.path_str(path), p), params)
  if opt.name == 'sgd':
    base = optax.sgd(lr_fn, momentum=opt.momentum or None,
                     nesterov=opt.nesterov)
  elif opt.name == 'adam':
    base = optax.adam(lr_fn)
  elif opt.name == 'adamw':
    base = optax.adamw(lr_fn, weight_decay=opt.weight_decay,
                       mask=decay_mask)
  else:
    raise ValueError(f'unknown optimizer {opt.name!r}; valid choices are '
                     f'{list(OPTIMIZERS)}')
  inner = base if opt.name == 'adamw' else optax.chain(
      optax.add_decayed_weights(opt.weight_decay, mask=decay_mask), base)
  if opt.get('grad_clip_norm'):
    inner = optax.chain(optax.clip_by_global_norm(opt.grad_clip_norm), inner)
  return inner


def create_optimizer(config: ml_collections.ConfigDict, total_steps: int,
                     lr_fn: optax.Schedule, *, init_masks: Any = None
                     ) -> optax.GradientTransformationExtraArgs:
  """`create_inner_optimizer` wrapped by `sparsify` from ``config.sparsity``
  (``init_masks``: given initial masks, as `rigl_jax.from_config` takes)."""
  return rigl_jax.from_config(create_inner_optimizer(config, lr_fn),
                              sparsity_fields(config, total_steps),
                              init_masks=init_masks)
