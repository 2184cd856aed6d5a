"""Training and evaluation: Algorithm 1 of the RigL paper around any model.

``train_and_evaluate(config, workdir)`` builds the data, the model and the
sparse optimizer from ``config`` and trains with one jitted step; it writes
metrics (TensorBoard events plus ``metrics.jsonl``), orbax checkpoints of the
whole train state, and ``results.json`` at the end. A run restarted with the
same workdir resumes from its latest checkpoint.
"""

from __future__ import annotations

import json
import math
import os
import signal
import threading
import time
from typing import Any, Callable

from absl import logging
from clu import metric_writers
import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

import rigl_jax
from rigl_jax import cpu_allocator
from rigl_jax.experiment import checkpoints as checkpoints_lib
from rigl_jax.experiment import data as data_lib
from rigl_jax.experiment import models as models_lib
from rigl_jax.experiment import optimizers
from rigl_jax.experiment import results as results_lib
from rigl_jax.experiment import sharding as sharding_lib
from rigl_jax.experiment import steps as steps_lib
from rigl_jax.experiment import validation


class NonFiniteError(ValueError):
  """The loss or the gradients became NaN or Inf (``on_nonfinite='stop'``)."""


class Preempted(Exception):
  """SIGTERM arrived; a checkpoint of ``step`` was written before stopping."""

  def __init__(self, step: int, directory: str):
    super().__init__(f'stopped by SIGTERM after saving a checkpoint of step '
                     f'{step} in {directory}; rerun the same command to resume')
    self.step = step


@flax.struct.dataclass
class TrainState:
  """Everything a run needs to continue: one pytree, checkpointed whole."""
  step: jax.Array
  params: Any
  batch_stats: Any
  opt_state: Any
  rng: jax.Array


class JsonlWriter(metric_writers.interface.MetricWriter):
  """Appends scalars as JSON lines: ``{"step": ..., "name": value, ...}``."""

  def __init__(self, path: str):
    self._path = path

  def write_scalars(self, step: int, scalars) -> None:
    row = {'step': int(step)}
    row.update({k: float(np.asarray(v)) for k, v in scalars.items()})
    with open(self._path, 'a', encoding='utf-8') as f:
      f.write(json.dumps(row) + '\n')

  def write_summaries(self, step, values, metadata=None):
    pass

  def write_images(self, step, images):
    pass

  def write_videos(self, step, videos):
    pass

  def write_audios(self, step, audios, *, sample_rate):
    pass

  def write_texts(self, step, texts):
    pass

  def write_histograms(self, step, arrays, num_buckets=None):
    pass

  def write_hparams(self, hparams):
    pass

  def flush(self):
    pass

  def close(self):
    pass


def num_train_steps(config: ml_collections.ConfigDict,
                    info: data_lib.DatasetInfo) -> int:
  """Total steps of the run (`steps.num_train_steps`)."""
  return steps_lib.num_train_steps(config, info.num_train)


def loss_and_metrics(logits, batch, kind: str, num_classes: int,
                      label_smoothing: float):
  """Cross-entropy (label-smoothed for training) and accuracy, per example."""
  labels = batch['label'] if kind == 'image' else batch['targets']
  one_hot = jax.nn.one_hot(labels, num_classes)
  if label_smoothing:
    one_hot = optax.smooth_labels(one_hot, label_smoothing)
  loss = optax.softmax_cross_entropy(logits.astype(jnp.float32), one_hot)
  correct = (jnp.argmax(logits, -1) == labels).astype(jnp.float32)
  if kind == 'text':  # average over the sequence
    loss, correct = loss.mean(-1), correct.mean(-1)
  return loss, correct


def _all_finite(loss: jax.Array, grads: Any) -> jax.Array:
  finite = jnp.isfinite(loss)
  for g in jax.tree.leaves(grads):
    finite &= jnp.all(jnp.isfinite(g))
  return finite


def make_train_step(model: nn.Module, tx, lr_fn, kind: str, num_classes: int,
                    label_smoothing: float, *, on_nonfinite: str = 'stop',
                    state_sharding: Any = None,
                    batch_sharding: Any = None) -> Callable:
  """The jitted step: forward, dense gradient, sparse optimizer update.

  Args:
    model: the Flax module.
    tx: the `sparsify` optimizer.
    lr_fn: the learning-rate schedule (for the metrics).
    kind: 'image' or 'text'.
    num_classes: classes (or vocabulary size).
    label_smoothing: for the training loss.
    on_nonfinite: 'stop' (the step's ``finite`` metric tells the loop) or
      'skip' (a step with a NaN/Inf loss or gradient leaves the state as it
      was, apart from the step counter).
    state_sharding: shardings of the `TrainState` (None: jit's default).
    batch_sharding: sharding of every batch array.

  Returns:
    ``step(state, batch, mask_update=None) -> (state, metrics)``, jitted,
    donating the state. ``mask_update`` (a Python bool, static; see
    ``tx.schedule.is_update_step``) compiles the plain step and the mask-update step
    as two programs; None keeps one program with a `lax.cond`.
  """
  inputs_key = 'image' if kind == 'image' else 'inputs'

  def train_step(state: TrainState, batch, mask_update=None):
    rng = jax.random.fold_in(state.rng, state.step)

    def loss_fn(params):
      variables = {'params': params}
      if state.batch_stats is not None:
        variables['batch_stats'] = state.batch_stats
      logits, new_vars = model.apply(
          variables, batch[inputs_key], train=True, mutable=['batch_stats'],
          rngs={'dropout': rng})
      loss, correct = loss_and_metrics(logits, batch, kind, num_classes,
                                        label_smoothing)
      return loss.mean(), (new_vars.get('batch_stats'), correct.mean())

    (loss, (batch_stats, acc)), grads = jax.value_and_grad(
        loss_fn, has_aux=True)(state.params)
    finite = _all_finite(loss, grads)
    updates, opt_state = tx.update(grads, state.opt_state, state.params,
                                   mask_update=mask_update)
    params = optax.apply_updates(state.params, updates)
    new_state = state.replace(params=params, batch_stats=batch_stats,
                              opt_state=opt_state)
    if on_nonfinite == 'skip':
      new_state = jax.tree.map(lambda new, old: jnp.where(finite, new, old),
                               new_state, state)
      # The sparse schedule counts every step, skipped or not.
      new_state = new_state.replace(opt_state=_set_sparse_step(
          new_state.opt_state, rigl_jax.get_sparse_state(opt_state).step))
    sparse = rigl_jax.get_sparse_state(new_state.opt_state)
    metrics = {'loss': loss, 'accuracy': acc, 'learning_rate': lr_fn(state.step),
               'drop_fraction': sparse.drop_fraction,
               'mask_churn': sparse.mask_churn, 'finite': finite}
    return new_state.replace(step=state.step + 1), metrics

  if state_sharding is None:
    return jax.jit(train_step, donate_argnums=(0,),
                   static_argnums=(2,))
  return jax.jit(train_step, donate_argnums=(0,),
                 static_argnums=(2,),
                 in_shardings=(state_sharding, batch_sharding),
                 out_shardings=(state_sharding, None))


def _set_sparse_step(opt_state: Any, step: jax.Array) -> Any:
  def visit(x):
    if isinstance(x, rigl_jax.SparseState):
      return x._replace(step=step)
    return x
  return jax.tree.map(visit, opt_state,
                      is_leaf=lambda x: isinstance(x, rigl_jax.SparseState))


def make_eval_step(model: nn.Module, kind: str, num_classes: int,
                   state_sharding: Any = None,
                   batch_sharding: Any = None) -> Callable:
  """The jitted eval step: summed loss, correct count and example count."""
  inputs_key = 'image' if kind == 'image' else 'inputs'

  def eval_step(state: TrainState, batch):
    variables = {'params': state.params}
    if state.batch_stats is not None:
      variables['batch_stats'] = state.batch_stats
    logits = model.apply(variables, batch[inputs_key], train=False)
    loss, correct = loss_and_metrics(logits, batch, kind, num_classes, 0.0)
    w = batch['mask']
    return {'loss': jnp.sum(loss * w), 'correct': jnp.sum(correct * w),
            'count': jnp.sum(w)}

  if state_sharding is None:
    return jax.jit(eval_step)
  return jax.jit(eval_step, in_shardings=(state_sharding, batch_sharding))


def evaluate(eval_step, state: TrainState, data: data_lib.Data, split: str,
             kind: str, batch_sharding: Any = None) -> dict[str, float]:
  """One pass over an eval split: loss, accuracy (and bits per char)."""
  totals = {'loss': 0.0, 'correct': 0.0, 'count': 0.0}
  for batch in data.eval_batches(split):
    if batch_sharding is not None:
      batch = sharding_lib.global_batch(batch, batch_sharding)
    out = eval_step(state, batch)
    for k in totals:
      totals[k] += float(out[k])
  n = max(totals['count'], 1.0)
  res = {'loss': totals['loss'] / n, 'accuracy': totals['correct'] / n}
  if kind == 'text':
    res['bits_per_char'] = res['loss'] / math.log(2.0)
  return res


def _state_init(model, tx, info, rng) -> tuple[Callable, jax.Array]:
  """``(init, key)``: ``init(key)`` builds the masked initial `TrainState`."""
  init_rng, state_rng = jax.random.split(rng)
  dtype = jnp.float32 if info.kind == 'image' else jnp.int32
  dummy = jnp.zeros((1,) + tuple(info.input_shape), dtype)

  def init(r):
    variables = model.init({'params': r, 'dropout': r}, dummy, train=False)
    params, opt_state = rigl_jax.masked_init(tx, variables['params'])
    return TrainState(step=jnp.zeros([], jnp.int32), params=params,
                      batch_stats=variables.get('batch_stats'),
                      opt_state=opt_state, rng=state_rng)

  return init, init_rng


def train_state_shardings(config, model, tx, info, rng, mesh) -> Any:
  """Shardings of the `TrainState` on ``mesh``.

  Params are split by the `rigl_jax.experiment.sharding` rules of
  ``config.sharding``; every mask and optimizer leaf like its parameter; the
  rest replicated.

  Returns:
    A `TrainState` of `NamedSharding`s.
  """
  init, init_rng = _state_init(model, tx, info, rng)
  abstract = jax.eval_shape(init, init_rng)
  sharding_cfg = config.get('sharding') or {}
  specs = sharding_lib.params_specs(
      abstract.params, mesh, rules=tuple(sharding_cfg.get('rules', ())),
      fsdp=bool(sharding_cfg.get('fsdp', False)))
  return sharding_lib.state_shardings(abstract, abstract.params, specs, mesh)


def create_train_state(config, model, tx, info, rng,
                       shardings: Any = None) -> TrainState:
  """Initialises params, masks them once, and builds the optimizer state.

  Args:
    config: the experiment config.
    model: the Flax module.
    tx: the `sparsify` optimizer.
    info: the dataset's `DatasetInfo` (input shape and kind).
    rng: PRNG key of the run.
    shardings: `train_state_shardings(...)`, to create every leaf directly
      where it lives; None: the default device.

  Returns:
    The initial `TrainState` (params already masked).
  """
  del config  # the same signature as the other builders
  init, init_rng = _state_init(model, tx, info, rng)
  return jax.jit(init, out_shardings=shardings)(init_rng)


def _check_workdir(workdir: str) -> None:
  try:
    os.makedirs(workdir, exist_ok=True)
  except OSError as e:
    raise ValueError(f'cannot create workdir {workdir!r}: {e.strerror}'
                     ) from None
  if not os.access(workdir, os.R_OK | os.W_OK | os.X_OK):
    raise ValueError(f'workdir {workdir!r} is not readable and writable')


def build(config: ml_collections.ConfigDict):
  """Validates the config by building data, model and optimizer from it.

  Returns:
    ``(data, model, tx, lr_fn, total_steps)``.

  Raises:
    ValueError: naming the bad field and the valid choices.
  """
  validation.validate(config)
  data = data_lib.get_data(config.data, seed=config.seed)
  info = data.info
  try:
    model = models_lib.get_model(config.model.name,
                                 num_classes=info.num_classes,
                                 **config.model.get('kwargs', {}))
  except TypeError as e:
    raise ValueError(f'bad config.model.kwargs for {config.model.name!r}: '
                     f'{e}') from None
  total_steps = num_train_steps(config, info)
  lr_fn = optimizers.create_learning_rate_fn(config, total_steps)
  tx = optimizers.create_optimizer(config, total_steps, lr_fn)
  return data, model, tx, lr_fn, total_steps


def restore_train_state(config: ml_collections.ConfigDict, workdir: str
                        ) -> tuple[TrainState, int]:
  """The newest good checkpoint of a run, on the default device.

  Args:
    config: the config the run was written with.
    workdir: the run's workdir.

  Returns:
    ``(state, step)``; ``step`` is 0 (and ``state`` freshly initialised) if
    the run has no checkpoint.

  Raises:
    ValueError: incompatible config, or every checkpoint damaged.
  """
  data, model, tx, _, _ = build(config)
  state = create_train_state(config, model, tx, data.info,
                             jax.random.PRNGKey(config.seed))
  ckpts = checkpoints_lib.Checkpoints(
      os.path.join(os.path.abspath(workdir), 'checkpoints'), config.to_dict(),
      keep=config.get('keep_checkpoints', 2))
  try:
    return ckpts.restore(state)
  finally:
    ckpts.close()


def _layer_sparsity(params) -> tuple[dict[str, float], int, int]:
  """Measured per-leaf sparsity of the sparse-eligible leaves."""
  out, zeros, total = {}, 0, 0
  flat, _ = jax.tree_util.tree_flatten_with_path(params)
  for path, p in flat:
    if p.ndim < 2:
      continue
    z = int(jnp.sum(p == 0))
    out[rigl_jax.path_str(path)] = z / p.size
    zeros, total = zeros + z, total + p.size
  return out, zeros, total


# Test hook: RIGL_JAX_FAULT="<point>@<step>" SIGKILLs this process at that
# point of that step ('after_step', 'during_save', 'after_save'), so tests can
# kill a run at exact moments (mid checkpoint write, right after a mask
# update) and check that it resumes bit for bit.
_FAULT = os.environ.get('RIGL_JAX_FAULT', '')


def _fault_point(point: str, step: int) -> None:
  if _FAULT and _FAULT == f'{point}@{step}':
    os.kill(os.getpid(), signal.SIGKILL)


class _SigtermFlag:
  """Records SIGTERM while installed (main thread only), so the loop can save
  a checkpoint and stop cleanly."""

  def __init__(self):
    self.raised = False
    self._previous = None

  def __enter__(self):
    if threading.current_thread() is threading.main_thread():
      self._previous = signal.signal(signal.SIGTERM, self._handle)
    return self

  def _handle(self, signum, frame):
    del signum, frame
    self.raised = True

  def __exit__(self, *exc):
    if self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)
    return False


def _truncate_jsonl(path: str, last_step: int) -> None:
  """Drops rows logged after ``last_step`` (by a run killed after its last
  checkpoint), so a resumed run's log equals an uninterrupted one's."""
  if not os.path.exists(path):
    return
  with open(path, encoding='utf-8') as f:
    lines = f.readlines()
  keep = []
  for line in lines:
    try:
      if json.loads(line)['step'] <= last_step:
        keep.append(line)
    except (ValueError, KeyError):
      pass  # a line cut short by the kill
  tmp = path + '.tmp'
  with open(tmp, 'w', encoding='utf-8') as f:
    f.writelines(keep)
  os.replace(tmp, path)


def _check_finite(unchecked: list[tuple[int, Any]], ckpt_dir: str,
                  last_saved: int) -> None:
  """Raises `NonFiniteError` for the first step whose loss or gradients were
  NaN/Inf; called before anything is saved."""
  for step, m in unchecked:
    if not bool(m['finite']):
      raise NonFiniteError(
          f'non-finite loss or gradients at step {step} (loss '
          f'{float(m["loss"])}); stopped without saving it. The last good '
          f'checkpoint is step {last_saved} in {ckpt_dir}. Lower the learning '
          "rate, or set config.on_nonfinite='skip' to skip such steps.")
  unchecked.clear()


def _data_axis_check(config: ml_collections.ConfigDict, mesh) -> None:
  n = mesh.shape[sharding_lib.DATA_AXIS]
  for field in ('batch_size', 'eval_batch_size'):
    value = config.data.get(field)
    if value and value % n:
      raise ValueError(f'config.data.{field} = {value} is not divisible by the '
                       f"mesh's data axis ({n} devices, config.mesh = "
                       f'{dict(config.mesh)}); pick a multiple of {n}')


def train_and_evaluate(config: ml_collections.ConfigDict,
                       workdir: str) -> dict[str, Any]:
  """Trains ``config``'s experiment in ``workdir`` and returns its results.

  Args:
    config: the experiment config (see ``configs/default.py``).
    workdir: where checkpoints, metrics and ``results.json`` go; the newest
      good checkpoint there is resumed.

  Returns:
    The results dict written to ``<workdir>/results.json``.

  Raises:
    ValueError: a bad config, data or an incompatible checkpoint (one
      message naming the problem).
    NonFiniteError: NaN/Inf loss or gradients with ``on_nonfinite='stop'``.
    Preempted: SIGTERM arrived; a checkpoint was saved first.
  """
  t_start = time.time()
  _check_workdir(workdir)
  if (config.get('tune_cpu_allocator', True)
      and jax.default_backend() == 'cpu'):
    cpu_allocator.keep_large_allocations_on_heap()
  data, model, tx, lr_fn, total_steps = build(config)
  info = data.info
  mesh = sharding_lib.make_mesh(config.get('mesh') or {'data': -1})
  _data_axis_check(config, mesh)
  batch_sharding = sharding_lib.batch_sharding(mesh)
  rng = jax.random.PRNGKey(config.seed)
  state_sharding = train_state_shardings(config, model, tx, info, rng, mesh)
  state = create_train_state(config, model, tx, info, rng, state_sharding)

  ckpt_dir = os.path.join(os.path.abspath(workdir), 'checkpoints')
  ckpts = checkpoints_lib.Checkpoints(
      ckpt_dir, config.to_dict(), keep=config.get('keep_checkpoints', 2))
  state, start_step = ckpts.restore(state)
  if start_step:
    logging.info('Resumed from step %d.', start_step)

  is_main = jax.process_index() == 0
  jsonl = os.path.join(workdir, 'metrics.jsonl')
  if is_main:
    _truncate_jsonl(jsonl, start_step)
  writer = metric_writers.create_default_writer(
      workdir, just_logging=not is_main)
  if is_main:
    writer = metric_writers.MultiWriter([writer, JsonlWriter(jsonl)])
  if start_step == 0:
    writer.write_hparams({k: str(v) for k, v in
                          config.to_dict().items()})
  on_nonfinite = config.get('on_nonfinite', 'stop')
  train_step = make_train_step(
      model, tx, lr_fn, info.kind, info.num_classes,
      config.optimizer.label_smoothing, on_nonfinite=on_nonfinite,
      state_sharding=state_sharding, batch_sharding=batch_sharding)
  eval_step = make_eval_step(model, info.kind, info.num_classes,
                             state_sharding, batch_sharding)
  # The optimizer's own schedule says which steps change the masks.
  is_mask_update = tx.schedule.is_update_step
  eval_split = config.get('eval_split') or next(iter(info.num_eval))
  log_every = config.log_every_steps
  eval_every = config.eval_every_steps or total_steps
  ckpt_every = config.checkpoint_every_steps or total_steps

  batches = data.train_batches(start_step)
  pending, unchecked = [], []
  last_saved = start_step
  skipped = 0
  final = None  # the eval results of step total_steps
  t_loop = time.time()
  with _SigtermFlag() as sigterm:
    for step in range(start_step + 1, total_steps + 1):
      batch = sharding_lib.global_batch(next(batches), batch_sharding)
      state, metrics = train_step(state, batch, is_mask_update(step - 1))
      _fault_point('after_step', step)
      if pending:
        # At most two steps in flight: keeps dispatch ahead of the device
        # and avoids XLA:CPU collective deadlocks with many queued steps.
        jax.block_until_ready(pending[-1]['loss'])
      pending.append(metrics)
      if on_nonfinite == 'stop':
        unchecked.append((step, metrics))
      save = step % ckpt_every == 0 or step == total_steps or sigterm.raised
      # Logs at checkpoint steps too, so a resumed run logs the same rows.
      if step % log_every == 0 or save:
        _check_finite(unchecked, ckpt_dir, last_saved)
        summary = {f'train_{k}': float(np.mean([float(m[k]) for m in pending]))
                   for k in pending[0] if k != 'finite'}
        summary['train_drop_fraction'] = float(pending[-1]['drop_fraction'])
        summary['train_mask_churn'] = float(pending[-1]['mask_churn'])
        if on_nonfinite == 'skip':
          skipped += sum(1 for m in pending if not bool(m['finite']))
          summary['skipped_steps'] = skipped
        masks = rigl_jax.get_masks(state.opt_state)
        for name, value in rigl_jax.mask_sparsity(masks).items():
          summary[f'sparsity/{name}'] = float(value)
        rate = (step - start_step) / max(time.time() - t_loop, 1e-9)
        summary['steps_per_sec'] = rate
        writer.write_scalars(step, summary)
        logging.info('step %d/%d (%.0f%%), %.1f steps/s, ETA %.0f s, loss '
                     '%.4f', step, total_steps, 100.0 * step / total_steps,
                     rate, (total_steps - step) / rate, summary['train_loss'])
        pending = []
      if step % eval_every == 0 or step == total_steps:
        res = evaluate(eval_step, state, data, eval_split, info.kind,
                       batch_sharding)
        writer.write_scalars(step, {f'eval_{k}': v for k, v in res.items()})
        final = res if step == total_steps else None
      if save:
        _check_finite(unchecked, ckpt_dir, last_saved)
        ckpts.save(step, state)
        _fault_point('during_save', step)
        ckpts.wait()
        last_saved = step
        _fault_point('after_save', step)
        if sigterm.raised:
          writer.flush()
          ckpts.close()
          raise Preempted(step, ckpt_dir)
  ckpts.close()

  # The loop evaluated the final model at its last step (a run resumed at
  # its end evaluates here).
  test = final if final is not None else evaluate(
      eval_step, state, data, eval_split, info.kind, batch_sharding)
  layers, zeros, total = _layer_sparsity(state.params)
  masks = rigl_jax.get_masks(state.opt_state)
  mask_sp = {k: float(v) for k, v in rigl_jax.mask_sparsity(masks).items()}
  results = {
      'eval_split': eval_split,
      'test_loss': test['loss'],
      'steps': int(state.step),
      'global_sparsity': mask_sp.pop('global') if len(mask_sp) > 1 else 0.0,
      'weight_sparsity': zeros / max(total, 1),
      'layer_sparsity': mask_sp or layers,
      'num_params': int(sum(p.size for p in jax.tree.leaves(state.params))),
      'wall_time_s': time.time() - t_start,
      'resumed_from_step': start_step,
      'skipped_steps': skipped,
      'num_devices': int(mesh.size),
      'mesh': {k: int(v) for k, v in mesh.shape.items()},
      'config': config.to_dict(),
  }
  if info.kind == 'text':
    results['test_bits_per_char'] = test['bits_per_char']
  else:
    results['test_accuracy'] = test['accuracy']
  if is_main:
    results_lib.write(workdir, results)
  writer.flush()
  return results
