"""What both ticket-search drivers share: building a run (`prepare`),
saving and rewinding the iterate (`snapshot`, `rewind`), training to a step
(`train_to`), and writing results. Their config sections are in `schema`."""

from __future__ import annotations

import os
import time
from typing import Any, Callable, NamedTuple, Optional

from absl import logging
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

import rigl_jax
from rigl_jax import cpu_allocator
from rigl_jax.experiment import builders
from rigl_jax.experiment import data as data_lib
from rigl_jax.experiment import optimizers
from rigl_jax.experiment import results as results_lib
from rigl_jax.experiment import train
from rigl_jax.experiment import train_step as train_step_lib

class Setup(NamedTuple):
  """What both drivers build from a config (see `prepare`)."""
  data: data_lib.Data
  model: Any
  info: data_lib.DatasetInfo
  lr_fn: optax.Schedule
  total_steps: int
  inner: optax.GradientTransformation
  static_tx: Callable[[Any], optax.GradientTransformationExtraArgs]
  is_sparse: Any
  train_step: Callable
  evaluate: Callable[[Any, Any], dict[str, float]]


def prepare(config: ml_collections.ConfigDict, workdir: str) -> Setup:
  """Validates ``config`` and builds data, model, steps and the static
  optimizer factory ``static_tx(masks)`` (None: every weight active)."""
  try:
    os.makedirs(workdir, exist_ok=True)
  except OSError as e:
    raise ValueError(f'cannot create workdir {workdir!r}: {e.strerror}'
                     ) from None
  cpu_allocator.configure(config.get('tune_cpu_allocator', True))
  data, model, _, lr_fn, total_steps = builders.build(config)
  info = data.info
  inner = optimizers.create_inner_optimizer(config, lr_fn)
  fields = optimizers.sparsity_fields(config, total_steps)
  # Only `is_sparse` (which leaves are prunable) matters for a ticket search;
  # with init_masks the sparsity itself comes from the masks.
  fields.update(method='static', sparsity=0.0, distribution='uniform')
  fields.pop('custom_sparsity', None)

  def static_tx(masks):
    """Static sparse training with ``masks`` (None: all weights active)."""
    return rigl_jax.from_config(inner, fields, init_masks=masks)

  # One compiled step serves every mask: a static transform's update reads
  # the masks from its state, not from `init_masks`.
  train_step = train_step_lib.make_train_step(
      model, static_tx(None), lr_fn, info.kind, info.num_classes,
      config.optimizer.label_smoothing)
  eval_step = train_step_lib.make_eval_step(model, info.kind, info.num_classes)
  split = config.get('eval_split') or next(iter(info.num_eval))

  def evaluate(params, batch_stats):
    slim = builders.TrainState(step=jnp.zeros([], jnp.int32), params=params,
                            batch_stats=batch_stats, opt_state=None,
                            rng=jax.random.PRNGKey(0))
    return train.evaluate(eval_step, slim, data, split, info.kind)

  return Setup(data, model, info, lr_fn, total_steps, inner, static_tx,
                fields.get('is_sparse'), train_step, evaluate)


def snapshot(state: Any) -> Any:
  """A host copy of a state (safe from buffer donation), bit for bit."""
  return jax.device_get(state)


def fast_forward(opt_state: Any, step: int) -> Any:
  """``opt_state`` with its learning-rate schedules standing at ``step``.

  On a fresh state: open_lth's ``lr_schedule.step()`` k times on a new
  optimizer (training/train.py:64-88); every other counter (Adam's bias
  correction) stays where it is (0 on a new optimizer). With ``step = 0``
  on a used state: the CS code's schedule restarting every round while the
  momentum carries on (main.py:66, 110-117).
  """
  def visit(x):
    if isinstance(x, optax.ScaleByScheduleState):
      return x._replace(count=jnp.asarray(step, x.count.dtype))
    return x
  return jax.tree.map(
      visit, opt_state,
      is_leaf=lambda x: isinstance(x, optax.ScaleByScheduleState))


def rewind(saved: builders.TrainState, masks: Any,
           inner: Optional[optax.GradientTransformation] = None,
           start_step: Optional[int] = None) -> builders.TrainState:
  """The iterate ``saved`` at step k, restarted with ``masks``.

  Args:
    saved: a `snapshot` of a `builders.TrainState` whose optimizer is a
      `sparsify(inner, 'static', ...)` over the same ``inner``.
    masks: the new masks (bool per sparse leaf, None per dense leaf). A
      ticket search may prune a whole layer; its mask is then all False and
      the layer stays at zero (`sparsify`'s ``init_masks`` refuses such a
      mask from users, so the masks go into the state directly).
    inner: the inner optimizer: given, the optimizer restarts fresh with its
      learning-rate schedule at step k (`fast_forward`, open_lth's rewind);
      None: ``saved``'s optimizer state (momentum included) is kept.
    start_step: with ``inner``: the step training restarts from (its
      learning rate and data) instead of k; 0 retrains the rewound weights
      over the whole schedule (the CS code's final ticket).

  Returns:
    ``saved``'s weights (masked), batch statistics, step counters and rng,
    the optimizer state as ``inner`` says, with ``masks`` in the sparse
    state. Momentum left at pruned positions is harmless: a static
    transform keeps them at zero.
  """
  state = jax.tree.map(jnp.array, saved)
  # Copies: the state's buffers are donated to the train step, and the
  # caller's masks may be used again (a control branch, the next round).
  masks = jax.tree.map(lambda m: None if m is None else jnp.array(m, bool),
                       masks, is_leaf=lambda x: x is None)
  params = rigl_jax.apply_masks(state.params, masks)
  old = rigl_jax.get_sparse_state(state.opt_state)
  if (jax.tree.structure(old.masks, is_leaf=lambda x: x is None) !=
      jax.tree.structure(masks, is_leaf=lambda x: x is None)):
    raise ValueError('rewind: the masks do not match the sparse leaves of '
                     'the saved optimizer state')
  opt_state = old._replace(masks=masks)
  if inner is not None:
    step = int(state.step) if start_step is None else int(start_step)
    opt_state = opt_state._replace(inner_state=fast_forward(
        inner.init(params), step))
    state = state.replace(step=jnp.asarray(step, state.step.dtype))
  return state.replace(params=params, opt_state=opt_state)


def train_to(setup: Setup, state: builders.TrainState, stop: int,
             log_every: int, tag: str,
             hook: Optional[Callable[[Any, int], None]] = None
             ) -> builders.TrainState:
  """Runs ``setup.train_step`` from ``state.step`` up to step ``stop``;
  ``hook(state, step)`` after each step (`progress.Progress.periodic`)."""
  start = int(state.step)
  batches = setup.data.train_batches(start)
  t0 = time.time()
  for step in range(start + 1, stop + 1):
    state, metrics = setup.train_step(state, next(batches))
    if hook is not None:
      hook(state, step)
    if step % log_every == 0 or step == stop:
      check_finite(metrics['loss'], tag, step)
      logging.info('%s: step %d/%d, loss %.4f, %.1f steps/s', tag, step,
                   setup.total_steps, float(metrics['loss']),
                   (step - start) / max(time.time() - t0, 1e-9))
  return state


def check_finite(loss: Any, tag: str, step: int) -> None:
  if not np.isfinite(float(loss)):
    raise ValueError(f'{tag}: the loss is {float(loss)} at step {step}; '
                     'lower the learning rate (or lambda)')


def sparsity(masks: Any) -> dict[str, Any]:
  """Exact counts of a mask tree: global and per-leaf fraction of zeros."""
  flat, _ = jax.tree_util.tree_flatten_with_path(
      masks, is_leaf=lambda x: x is None)
  layers, nnz, total = {}, 0, 0
  for path, m in flat:
    if m is None:
      continue
    n = int(np.sum(np.asarray(m)))
    layers[rigl_jax.path_str(path)] = 1.0 - n / m.size
    nnz, total = nnz + n, total + int(m.size)
  return {'sparsity': 1.0 - nnz / max(total, 1), 'nnz': nnz,
          'prunable': total, 'layer_sparsity': layers}


def write(workdir: str, results: dict[str, Any]) -> None:
  if jax.process_index() != 0:
    return
  results_lib.write(workdir, results)


def check_int(name: str, value: Any, lo: int, hi: Optional[int] = None
               ) -> int:
  if (not isinstance(value, (int, np.integer)) or isinstance(value, bool)
      or value < lo or (hi is not None and value >= hi)):
    bound = f'in [{lo}, {hi})' if hi is not None else f'>= {lo}'
    raise ValueError(f'{name} must be an integer {bound}; got {value!r}')
  return int(value)
