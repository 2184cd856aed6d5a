"""Training and evaluation: Algorithm 1 of the RigL paper around any model.

The shape of flax's ``examples/imagenet/train.py``: a train step, an eval
step (`train_step`) and a short loop. ``train_and_evaluate(config,
workdir)`` builds the run (`builders`), trains with one jitted step,
reports progress with ``clu.periodic_actions``, logs metrics (`writers`),
saves orbax checkpoints of the whole train state (`checkpoints`), stops
cleanly on SIGTERM (`preemption`) and writes ``results.json`` at the end
(`results`). A run restarted with the same workdir resumes from its latest
checkpoint.
"""

from __future__ import annotations

import math
import os
import time
from typing import Any

from clu import periodic_actions
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

import rigl_jax
from rigl_jax import cpu_allocator
from rigl_jax.experiment import builders
from rigl_jax.experiment import checkpoints as checkpoints_lib
from rigl_jax.experiment import console
from rigl_jax.experiment import data as data_lib
from rigl_jax.experiment import preemption
from rigl_jax.experiment import results as results_lib
from rigl_jax.experiment import sharding as sharding_lib
from rigl_jax.experiment import writers
from rigl_jax.experiment.builders import TrainState
# The steps live in `train_step` (no clu or data libraries there); their
# names stay reachable from here.
from rigl_jax.experiment.train_step import loss_and_metrics  # pylint: disable=unused-import
from rigl_jax.experiment.train_step import make_eval_step
from rigl_jax.experiment.train_step import make_train_step


class NonFiniteError(ValueError):
  """The loss or the gradients became NaN or Inf (``on_nonfinite='stop'``)."""


def evaluate(eval_step, state: TrainState, data: data_lib.Data, split: str,
             kind: str, batch_sharding: Any = None) -> dict[str, float]:
  """One pass over an eval split: loss, accuracy (and `text_metrics`)."""
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
    res.update(text_metrics(data.info.name, res['loss']))
  return res


def text_metrics(dataset: str, loss: float) -> dict[str, float]:
  """Bits per character of character-level text; perplexity of tokens."""
  if dataset in data_lib.TOKENIZED:
    return {'perplexity': math.exp(min(loss, 700.0))}
  return {'bits_per_char': loss / math.log(2.0)}


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


def _check_workdir(workdir: str) -> None:
  if os.path.exists(workdir) and not os.path.isdir(workdir):
    raise ValueError(f'workdir {workdir!r} is a file, not a directory; pass '
                     'a new or existing directory')
  try:
    os.makedirs(workdir, exist_ok=True)
  except OSError as e:
    raise ValueError(f'cannot create workdir {workdir!r}: {e.strerror}'
                     ) from None
  if not os.access(workdir, os.R_OK | os.W_OK | os.X_OK):
    raise ValueError(f'workdir {workdir!r} is not readable and writable')


def _train_summary(pending: list[dict[str, Any]], state: TrainState
                   ) -> dict[str, float]:
  """The logged row: train metrics averaged since the last row, the latest
  drop fraction and mask churn, and each layer's mask sparsity."""
  summary = {f'train_{k}': float(np.mean([float(m[k]) for m in pending]))
             for k in pending[0] if k != 'finite'}
  summary['train_drop_fraction'] = float(pending[-1]['drop_fraction'])
  summary['train_mask_churn'] = float(pending[-1]['mask_churn'])
  masks = rigl_jax.get_masks(state.opt_state)
  for name, value in rigl_jax.mask_sparsity(masks).items():
    summary[f'sparsity/{name}'] = float(value)
  return summary


def _final_results(state: TrainState, test: dict[str, float], kind: str,
                   eval_split: str) -> dict[str, Any]:
  """The model's part of ``results.json``: test metrics and sparsity."""
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
  }
  if kind == 'text':
    results.update({f'test_{k}': v for k, v in test.items()
                    if k in ('bits_per_char', 'perplexity')})
  else:
    results['test_accuracy'] = test['accuracy']
  return results


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
    preemption.Preempted: SIGTERM arrived; a checkpoint was saved first.
  """
  t_start = time.time()
  _check_workdir(workdir)
  cpu_allocator.configure(config.get('tune_cpu_allocator', True))
  data, model, tx, lr_fn, total_steps = builders.build(config)
  info = data.info
  mesh = sharding_lib.make_mesh(config.get('mesh') or {'data': -1})
  _data_axis_check(config, mesh)
  batch_sharding = sharding_lib.batch_sharding(mesh)
  rng = jax.random.PRNGKey(config.seed)
  state_sharding = builders.train_state_shardings(config, model, tx, info,
                                                  rng, mesh)
  state = builders.create_train_state(config, model, tx, info, rng,
                                      state_sharding)

  ckpt_dir = os.path.join(os.path.abspath(workdir), 'checkpoints')
  ckpts = checkpoints_lib.Checkpoints(
      ckpt_dir, config.to_dict(), keep=config.get('keep_checkpoints', 2))
  state, start_step = ckpts.restore(state)
  if start_step == total_steps and results_lib.finished(workdir):
    # A finished run started again: its results (the training's wall time
    # among them) are kept, not replaced by a second evaluation's.
    ckpts.close()
    console.say('the run finished already; its results are in %s',
                results_lib.path(workdir))
    return results_lib.read(workdir)
  if start_step:
    console.say('resumed from the checkpoint of step %d in %s', start_step,
                ckpt_dir)
  is_main = jax.process_index() == 0
  writer = writers.create_writer(workdir, start_step, config.to_dict(),
                                 is_main)

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

  progress = console.Progress(total_steps, log_every)
  report_progress = periodic_actions.ReportProgress(
      num_train_steps=total_steps, every_steps=log_every, every_secs=None)
  hooks = [report_progress]
  if is_main and config.get('profile_steps', 0):
    hooks.append(periodic_actions.Profile(
        logdir=workdir, num_profile_steps=config.profile_steps,
        profile_duration_ms=None, first_profile=start_step + 5,
        every_secs=None))

  batches = data.train_batches(start_step)
  pending, unchecked = [], []  # metrics since the last row / finite check
  last_saved, skipped = start_step, 0
  final = None  # the eval results of step total_steps
  t_loop = time.time()
  with preemption.SigtermFlag() as sigterm:
    for step in range(start_step + 1, total_steps + 1):
      batch = sharding_lib.global_batch(next(batches), batch_sharding)
      state, metrics = train_step(state, batch, is_mask_update(step - 1))
      preemption.fault_point('after_step', step)
      if pending:
        # At most two steps in flight: keeps dispatch ahead of the device
        # and avoids XLA:CPU collective deadlocks with many queued steps.
        jax.block_until_ready(pending[-1]['loss'])
      pending.append(metrics)
      if on_nonfinite == 'stop':
        unchecked.append((step, metrics))
      for hook in hooks:
        hook(step)

      stop = sigterm.stop(step)  # agreed by every process
      save = step % ckpt_every == 0 or step == total_steps or stop
      # Logs at checkpoint steps too, so a resumed run logs the same rows.
      if step % log_every == 0 or save:
        _check_finite(unchecked, ckpt_dir, last_saved)
        summary = _train_summary(pending, state)
        if on_nonfinite == 'skip':
          skipped += sum(1 for m in pending if not bool(m['finite']))
          summary['skipped_steps'] = skipped
        summary['steps_per_sec'] = (step - start_step) / max(
            time.time() - t_loop, 1e-9)
        writer.write_scalars(step, summary)
        progress.update(step, summary['steps_per_sec'], summary)
        pending = []
      if step % eval_every == 0 or step == total_steps:
        with report_progress.timed('eval', wait_jax_async_dispatch=False):
          res = evaluate(eval_step, state, data, eval_split, info.kind,
                         batch_sharding)
        writer.write_scalars(step, {f'eval_{k}': v for k, v in res.items()})
        console.say(console.metrics_line(f'eval ({eval_split}) at step {step}',
                                         res))
        final = res if step == total_steps else None
      if save:
        _check_finite(unchecked, ckpt_dir, last_saved)
        with report_progress.timed('checkpoint',
                                   wait_jax_async_dispatch=False):
          ckpts.save(step, state)
          preemption.fault_point('during_save', step)
          ckpts.wait()
        last_saved = step
        if step != total_steps:  # the final summary names the last one
          console.say('checkpoint saved at step %d', step)
        preemption.fault_point('after_save', step)
        if stop:
          writer.flush()
          ckpts.close()
          raise preemption.Preempted(step, ckpt_dir)
  ckpts.close()

  # The loop evaluated the final model at its last step; a run resumed at
  # its end evaluates here.
  test = final if final is not None else evaluate(
      eval_step, state, data, eval_split, info.kind, batch_sharding)
  results = _final_results(state, test, info.kind, eval_split)
  results.update({
      'wall_time_s': time.time() - t_start,
      'resumed_from_step': start_step,
      'skipped_steps': skipped,
      'num_devices': int(mesh.size),
      'mesh': {k: int(v) for k, v in mesh.shape.items()},
      'config': config.to_dict(),
  })
  if is_main:
    results_lib.write(workdir, results)
  writer.flush()
  return results
