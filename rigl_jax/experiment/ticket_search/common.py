"""What both ticket-search drivers share: their config sections (declared
to the config validation), building a run (`prepare`), saving and rewinding
the iterate (`snapshot`, `rewind`), training to a step (`train_to`), and
writing results."""

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
from rigl_jax.experiment import validation
from rigl_jax.tickets import imp

TICKET_SEARCHES = ('cs', 'imp')


def _lambdas_check(v: Any) -> Optional[str]:
  vals = v if isinstance(v, (list, tuple)) else [v]
  ok = vals and all(isinstance(x, (int, float)) and not isinstance(x, bool)
                    and x >= 0 for x in vals)
  return None if ok else 'a non-negative number or a list of them'


# The config sections a ticket search reads (field -> check), declared to
# `rigl_jax.experiment.validation` so that `builders.build` accepts and checks
# them.
CONFIG_SECTIONS = {
    'imp': {
        'rounds': validation.integer(0),
        'prune_fraction': validation.number(0, 1),
        'scope': validation.choice(*imp.SCOPES),
        'rewind_step': validation.integer(0),
        'controls': lambda v: None if isinstance(v, (list, tuple)) and all(
            c in imp.CONTROLS for c in v) else (
                f'a list of controls out of {list(imp.CONTROLS)}'),
    },
    'cs': {
        'lambdas': _lambdas_check,
        'mask_init': validation.number(-float('inf'), float('inf')),
        'final_temperature': validation.number(1, float('inf')),
        'rounds': validation.integer(1),
        'rewind_step': validation.integer(0),
        'mask_lr': validation.number(0, float('inf'), lo_open=True),
        'mask_momentum': validation.number(0, 1, hi_open=True),
        'mask_nesterov': validation.boolean,
    },
}


# Defaults of the fields a config leaves out.
DEFAULTS = {
    'imp': {'rounds': 5, 'prune_fraction': 0.2, 'scope': 'global',
            'rewind_step': 0, 'controls': ()},
    # The authors' defaults (main.py:16-31): 3 rounds, lambda 1e-8, both
    # optimizers SGD with Nesterov momentum 0.9, the mask's at lr 0.1.
    'cs': {'lambdas': (1e-8,), 'mask_init': 0.0, 'final_temperature': 200.0,
           'rounds': 3, 'rewind_step': 0, 'mask_lr': 0.1,
           'mask_momentum': 0.9, 'mask_nesterov': True},
}


def section(config: ml_collections.ConfigDict, name: str) -> dict[str, Any]:
  """``config.<name>`` over `DEFAULTS` as a dict."""
  out = dict(DEFAULTS[name])
  given = config.get(name)
  if given is not None:
    out.update(given.to_dict() if hasattr(given, 'to_dict') else given)
  return out


def _section_check(fields: dict[str, validation.Check]) -> validation.Check:
  def check(value):
    if validation.mapping(value):
      return 'a ConfigDict of fields'
    for name, v in dict(value.to_dict() if hasattr(value, 'to_dict')
                        else value).items():
      if name not in fields:
        return (f'only the fields {sorted(fields)} (unknown field '
                f'{name!r})')
      allowed = fields[name](v)
      if allowed:
        return f'{name} = {v!r} to be {allowed}'
    return None
  return check


validation.EXTRA_SECTIONS['ticket_search'] = (
    lambda v: None if v in TICKET_SEARCHES else
    f'one of {list(TICKET_SEARCHES)}')
for _name, _fields in CONFIG_SECTIONS.items():
  validation.EXTRA_SECTIONS[_name] = _section_check(_fields)


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
  train_step = train.make_train_step(
      model, static_tx(None), lr_fn, info.kind, info.num_classes,
      config.optimizer.label_smoothing)
  eval_step = train.make_eval_step(model, info.kind, info.num_classes)
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
