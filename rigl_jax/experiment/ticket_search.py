"""Ticket-search drivers: Continuous Sparsification and IMP with rewinding.

``run(config, workdir)`` dispatches on ``config.ticket_search`` (``'cs'`` or
``'imp'``). Both drivers reuse the experiment system's pieces (`train.build`,
`train.create_train_state`, `train.make_train_step`, `train.make_eval_step`,
`train.evaluate`, the data streams) and train every ticket with the same
Static sparse path as any other run: ``rigl_jax.sparsify(inner, 'static',
init_masks=masks)``.

Rewinding to step k restores the whole iterate saved at step k of the first
training run: weights, batch-norm statistics, optimizer state (momentum and
the learning-rate schedule's count), the step counter (hence the data
stream) and the rng; the new masks are then applied. k = 0 is the original
lottery-ticket procedure.

Each driver writes ``<workdir>/results.json`` after every round (with
``"complete": false`` until the end); see `run_imp` and `run_cs`.
"""

from __future__ import annotations

import math
import os
import time
from typing import Any, Callable, NamedTuple, Optional

from absl import logging
import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

import rigl_jax
from rigl_jax import cpu_allocator
from rigl_jax.experiment import data as data_lib
from rigl_jax.experiment import optimizers
from rigl_jax.experiment import results as results_lib
from rigl_jax.experiment import train
from rigl_jax.experiment import validation
from rigl_jax.tickets import cs
from rigl_jax.tickets import imp

TICKET_SEARCHES = ('cs', 'imp')


def _lambdas_check(v: Any) -> Optional[str]:
  vals = v if isinstance(v, (list, tuple)) else [v]
  ok = vals and all(isinstance(x, (int, float)) and not isinstance(x, bool)
                    and x >= 0 for x in vals)
  return None if ok else 'a non-negative number or a list of them'


# The config sections a ticket search reads (field -> check), declared to
# `rigl_jax.experiment.validation` so that `train.build` accepts and checks them.
CONFIG_SECTIONS = {
    'imp': {
        'rounds': validation.integer(0),
        'prune_fraction': validation.number(0, 1),
        'scope': validation.choice(*imp.SCOPES),
        'rewind_step': validation.integer(0),
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
            'rewind_step': 0},
    'cs': {'lambdas': (1e-5,), 'mask_init': 0.0, 'final_temperature': 200.0,
           'rounds': 2, 'rewind_step': 0, 'mask_lr': 0.1,
           'mask_momentum': 0.9, 'mask_nesterov': False},
}


def _section(config: ml_collections.ConfigDict, name: str) -> dict[str, Any]:
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


def run(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Runs the ticket search named by ``config.ticket_search``.

  Raises:
    ValueError: for an unknown ``ticket_search`` (naming the valid choices)
      or a bad config value.
  """
  kind = config.get('ticket_search')
  if kind == 'cs':
    return run_cs(config, workdir)
  if kind == 'imp':
    return run_imp(config, workdir)
  raise ValueError(f'unknown ticket_search {kind!r}; valid choices are '
                   f'{list(TICKET_SEARCHES)}')


# ---------------------------------------------------------------------------
# Shared pieces.


class Setup(NamedTuple):
  """What both drivers build from a config (see `prepare`)."""
  data: data_lib.Data
  model: Any
  info: data_lib.DatasetInfo
  lr_fn: optax.Schedule
  total_steps: int
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
  if (config.get('tune_cpu_allocator', True)
      and jax.default_backend() == 'cpu'):
    cpu_allocator.keep_large_allocations_on_heap()
  data, model, _, lr_fn, total_steps = train.build(config)
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
    slim = train.TrainState(step=jnp.zeros([], jnp.int32), params=params,
                            batch_stats=batch_stats, opt_state=None,
                            rng=jax.random.PRNGKey(0))
    return train.evaluate(eval_step, slim, data, split, info.kind)

  return Setup(data, model, info, lr_fn, total_steps, static_tx,
                fields.get('is_sparse'), train_step, evaluate)


def snapshot(state: Any) -> Any:
  """A host copy of a state (safe from buffer donation), bit for bit."""
  return jax.device_get(state)


def rewind(saved: train.TrainState, masks: Any) -> train.TrainState:
  """The iterate ``saved`` at step k, restarted with ``masks``.

  Args:
    saved: a `snapshot` of a `train.TrainState` whose optimizer is a
      `sparsify(inner, 'static', ...)` over the same ``inner``.
    masks: the new masks (bool per sparse leaf, None per dense leaf). A
      ticket search may prune a whole layer; its mask is then all False and
      the layer stays at zero (`sparsify`'s ``init_masks`` refuses such a
      mask from users, so the masks go into the state directly).

  Returns:
    ``saved``'s weights (masked), batch statistics, inner optimizer state,
    step counters and rng, with ``masks`` in the sparse state. Momentum left
    at pruned positions is harmless: a static transform keeps them at zero.
  """
  state = jax.tree.map(jnp.array, saved)
  masks = jax.tree.map(lambda m: None if m is None else jnp.asarray(m, bool),
                       masks, is_leaf=lambda x: x is None)
  params = rigl_jax.apply_masks(state.params, masks)
  old = rigl_jax.get_sparse_state(state.opt_state)
  if (jax.tree.structure(old.masks, is_leaf=lambda x: x is None) !=
      jax.tree.structure(masks, is_leaf=lambda x: x is None)):
    raise ValueError('rewind: the masks do not match the sparse leaves of '
                     'the saved optimizer state')
  return state.replace(params=params, opt_state=old._replace(masks=masks))


def train_to(setup: Setup, state: train.TrainState, stop: int,
             log_every: int, tag: str) -> train.TrainState:
  """Runs ``setup.train_step`` from ``state.step`` up to step ``stop``."""
  start = int(state.step)
  batches = setup.data.train_batches(start)
  t0 = time.time()
  for step in range(start + 1, stop + 1):
    state, metrics = setup.train_step(state, next(batches))
    if step % log_every == 0 or step == stop:
      _check_finite(metrics['loss'], tag, step)
      logging.info('%s: step %d/%d, loss %.4f, %.1f steps/s', tag, step,
                   setup.total_steps, float(metrics['loss']),
                   (step - start) / max(time.time() - t0, 1e-9))
  return state


def _check_finite(loss: Any, tag: str, step: int) -> None:
  if not np.isfinite(float(loss)):
    raise ValueError(f'{tag}: the loss is {float(loss)} at step {step}; '
                     'lower the learning rate (or lambda)')


def _sparsity(masks: Any) -> dict[str, Any]:
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


def _write(workdir: str, results: dict[str, Any]) -> None:
  if jax.process_index() != 0:
    return
  results_lib.write(workdir, results)


def _check_int(name: str, value: Any, lo: int, hi: Optional[int] = None
               ) -> int:
  if (not isinstance(value, (int, np.integer)) or isinstance(value, bool)
      or value < lo or (hi is not None and value >= hi)):
    bound = f'in [{lo}, {hi})' if hi is not None else f'>= {lo}'
    raise ValueError(f'{name} must be an integer {bound}; got {value!r}')
  return int(value)


# ---------------------------------------------------------------------------
# Iterative magnitude pruning with rewinding.


def run_imp(config: ml_collections.ConfigDict, workdir: str
            ) -> dict[str, Any]:
  """Iterative magnitude pruning with rewinding (Frankle et al. 2019).

  Round 0 trains the dense network for the full budget (``total_steps``);
  each of the ``config.imp.rounds`` later rounds removes
  ``config.imp.prune_fraction`` of the remaining prunable weights by
  magnitude (``config.imp.scope``: ``'global'`` or ``'layer'``), rewinds to
  step ``config.imp.rewind_step`` of round 0 and trains the new mask with
  static sparse training to ``total_steps``.

  Returns:
    The results written to ``<workdir>/results.json``: ``curve`` (per round:
    ``round``, ``sparsity`` over the prunable leaves, ``nnz``, ``prunable``,
    ``layer_sparsity``, ``test_accuracy``, ``test_loss``), the last round's
    ``test_accuracy`` and ``global_sparsity``, ``rewind_step``, ``steps``
    per round, ``wall_time_s``, ``complete`` and the ``config``.
  """
  t_start = time.time()
  setup = prepare(config, workdir)  # validates config.imp too
  c = _section(config, 'imp')
  rounds, fraction, scope = c['rounds'], float(c['prune_fraction']), c['scope']
  k = _check_int('imp.rewind_step', c['rewind_step'], 0, setup.total_steps)
  log_every = config.get('log_every_steps') or setup.total_steps

  state = train.create_train_state(config, setup.model, setup.static_tx(None),
                                   setup.info, jax.random.PRNGKey(config.seed))
  masks = rigl_jax.get_masks(state.opt_state)
  results = {'ticket_search': 'imp', 'rewind_step': k, 'prune_fraction':
             fraction, 'scope': scope, 'steps': setup.total_steps,
             'curve': [], 'complete': False, 'config': config.to_dict()}
  saved = None
  for r in range(rounds + 1):
    if r > 0:
      masks = imp.prune_remaining(state.params, masks, fraction, scope)
      state = rewind(saved, masks)
    elif k == 0:
      saved = snapshot(state)
    else:  # round 0 up to step k, snapshot, then on to the end
      state = train_to(setup, state, k, log_every, 'imp round 0')
      saved = snapshot(state)
    state = train_to(setup, state, setup.total_steps, log_every,
                     f'imp round {r}')
    # The masks this round trained with (the arrays given to `init` were
    # donated with the state).
    masks = rigl_jax.get_masks(state.opt_state)
    test = setup.evaluate(state.params, state.batch_stats)
    row = {'round': r, **_sparsity(masks), 'test_accuracy': test['accuracy'],
           'test_loss': test['loss']}
    results['curve'].append(row)
    results.update(test_accuracy=row['test_accuracy'],
                   global_sparsity=row['sparsity'],
                   wall_time_s=time.time() - t_start)
    logging.info('imp round %d: sparsity %.4f, test accuracy %.4f', r,
                 row['sparsity'], row['test_accuracy'])
    _write(workdir, results)
  results['complete'] = True
  results['wall_time_s'] = time.time() - t_start
  _write(workdir, results)
  return results


# ---------------------------------------------------------------------------
# Continuous Sparsification.


@flax.struct.dataclass
class SearchState:
  """A CS search iterate: a `train.TrainState`'s fields plus mask logits."""
  step: jax.Array
  params: Any
  logits: Any
  batch_stats: Any
  opt_state: Any
  mask_opt_state: Any
  rng: jax.Array

  def train_state(self) -> train.TrainState:
    return train.TrainState(step=self.step, params=self.params,
                            batch_stats=self.batch_stats,
                            opt_state=self.opt_state, rng=self.rng)


def make_search_step(model, tx, mask_tx, kind: str, num_classes: int,
                     label_smoothing: float, s0: float) -> Callable:
  """The jitted CS step ``(state, batch, beta, lam) -> (state, metrics)``.

  The model sees ``w * sigmoid(beta s) / sigmoid(s0)`` on sparse leaves; the
  loss is the cross-entropy plus ``lam * sum(sigmoid(beta s))``. Weights are
  updated by ``tx``, logits by ``mask_tx`` (no weight decay).
  """
  inputs_key = 'image' if kind == 'image' else 'inputs'

  def step_fn(state: SearchState, batch, beta, lam):
    rng = jax.random.fold_in(state.rng, state.step)

    def loss_fn(params, logits):
      variables = {'params': cs.gated_params(params, logits, beta, s0)}
      if state.batch_stats is not None:
        variables['batch_stats'] = state.batch_stats
      out, new_vars = model.apply(
          variables, batch[inputs_key], train=True, mutable=['batch_stats'],
          rngs={'dropout': rng})
      # pylint: disable-next=protected-access
      loss, correct = train.loss_and_metrics(out, batch, kind, num_classes,
                                              label_smoothing)
      pen = cs.penalty(logits, beta)
      return loss.mean() + lam * pen, (new_vars.get('batch_stats'),
                                       loss.mean(), correct.mean(), pen)

    (_, (batch_stats, loss, acc, pen)), (g_w, g_s) = jax.value_and_grad(
        loss_fn, argnums=(0, 1), has_aux=True)(state.params, state.logits)
    updates, opt_state = tx.update(g_w, state.opt_state, state.params)
    m_updates, mask_opt_state = mask_tx.update(g_s, state.mask_opt_state,
                                               state.logits)
    new_state = state.replace(
        step=state.step + 1, params=optax.apply_updates(state.params, updates),
        logits=optax.apply_updates(state.logits, m_updates),
        batch_stats=batch_stats, opt_state=opt_state,
        mask_opt_state=mask_opt_state)
    return new_state, {'loss': loss, 'accuracy': acc, 'penalty': pen}

  return jax.jit(step_fn, donate_argnums=(0,))


def run_cs(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Continuous Sparsification ticket search (Savarese et al. 2020).

  For each ``lambda`` in ``config.cs.lambdas``, from the same initial
  weights: ``config.cs.rounds`` search rounds of ``total_steps`` each (the
  temperature grows per epoch from 1 to ``config.cs.final_temperature``;
  between rounds logits above ``config.cs.mask_init`` are reset to it and
  the weight and logit optimizers restart; weights are not rewound). The
  ticket ``1[s > 0]`` is then trained with static sparse training from the
  iterate at step ``config.cs.rewind_step`` of the first round, to
  ``total_steps``.

  Returns:
    The results written to ``<workdir>/results.json``: ``curve`` (per lambda
    and round: ``lambda``, ``round``, ``sparsity`` of ``1[s > 0]`` and its
    ``nnz`` / ``layer_sparsity``, ``search_test_accuracy`` of the soft-masked
    network, ``hard_mask_test_accuracy`` of ``w * 1[s > 0]`` before
    retraining), ``tickets`` (per lambda: ``sparsity``, ``test_accuracy``
    after retraining, ...), the last ticket's ``test_accuracy`` and
    ``global_sparsity``, ``wall_time_s``, ``complete`` and the ``config``.
  """
  t_start = time.time()
  setup = prepare(config, workdir)  # validates config.cs too
  c = _section(config, 'cs')
  lambdas = [float(x) for x in (c['lambdas'] if isinstance(
      c['lambdas'], (list, tuple)) else [c['lambdas']])]
  rounds, s0 = c['rounds'], float(c['mask_init'])
  final_temp = float(c['final_temperature'])
  k = _check_int('cs.rewind_step', c['rewind_step'], 0, setup.total_steps)
  info = setup.info
  steps_per_epoch = max(1, info.num_train // config.data.batch_size)
  epochs = math.ceil(setup.total_steps / steps_per_epoch)
  log_every = config.get('log_every_steps') or setup.total_steps

  mask_config = config.copy_and_resolve_references()
  mask_config.optimizer.learning_rate = float(c['mask_lr'])
  mask_lr_fn = optimizers.create_learning_rate_fn(mask_config, setup.total_steps)
  mask_tx = optax.sgd(mask_lr_fn, momentum=c['mask_momentum'] or None,
                      nesterov=c['mask_nesterov'])
  dense_tx = setup.static_tx(None)
  search_step = make_search_step(
      setup.model, dense_tx, mask_tx, info.kind, info.num_classes,
      config.optimizer.label_smoothing, s0)

  results = {'ticket_search': 'cs', 'mask_init': s0, 'final_temperature':
             final_temp, 'rounds': rounds, 'rewind_step': k,
             'steps': setup.total_steps, 'epochs_per_round': epochs,
             'curve': [], 'tickets': [], 'complete': False,
             'config': config.to_dict()}
  for lam in lambdas:
    init = train.create_train_state(config, setup.model, dense_tx, info,
                                    jax.random.PRNGKey(config.seed))
    params, batch_stats = init.params, init.batch_stats
    rng = jax.device_get(init.rng)  # a fresh copy per round (donation)
    logits = cs.init_logits(params, s0, setup.is_sparse)
    saved = None
    for r in range(rounds):
      if r > 0:
        logits = cs.reset_logits(logits, s0)
      state = SearchState(
          step=jnp.zeros([], jnp.int32), params=params, logits=logits,
          batch_stats=batch_stats, opt_state=dense_tx.init(params),
          mask_opt_state=mask_tx.init(logits), rng=jnp.array(rng))
      # Each round reads a fresh stretch of the (deterministic) data stream.
      batches = setup.data.train_batches(r * setup.total_steps)
      beta = None
      t0 = time.time()
      for i in range(setup.total_steps):
        if r == 0 and i == k:
          saved = snapshot(state.train_state())
        if i % steps_per_epoch == 0:
          beta = cs.temperature(i // steps_per_epoch, epochs, final_temp)
        state, metrics = search_step(state, next(batches), beta,
                                     jnp.float32(lam))
        if (i + 1) % log_every == 0 or i + 1 == setup.total_steps:
          _check_finite(metrics['loss'], f'cs lambda {lam:g} round {r}', i + 1)
          logging.info(
              'cs lambda %g round %d: step %d/%d, beta %.1f, loss %.4f, '
              'penalty %.1f, %.1f steps/s', lam, r, i + 1, setup.total_steps,
              float(beta), float(metrics['loss']), float(metrics['penalty']),
              (i + 1) / max(time.time() - t0, 1e-9))
      params, logits, batch_stats = (state.params, state.logits,
                                     state.batch_stats)
      masks = cs.hard_masks(logits)
      soft = setup.evaluate(cs.gated_params(params, logits, beta, s0),
                            batch_stats)
      hard = setup.evaluate(rigl_jax.apply_masks(params, masks), batch_stats)
      row = {'lambda': lam, 'round': r, **_sparsity(masks),
             'final_temperature': float(beta),
             'search_test_accuracy': soft['accuracy'],
             'hard_mask_test_accuracy': hard['accuracy']}
      results['curve'].append(row)
      logging.info('cs lambda %g round %d: sparsity %.4f, search accuracy '
                   '%.4f, hard-mask accuracy %.4f', lam, r, row['sparsity'],
                   row['search_test_accuracy'], row['hard_mask_test_accuracy'])
      results['wall_time_s'] = time.time() - t_start
      _write(workdir, results)

    ticket = rewind(saved, masks)
    ticket = train_to(setup, ticket, setup.total_steps, log_every,
                      f'cs lambda {lam:g} ticket')
    masks = rigl_jax.get_masks(ticket.opt_state)
    test = setup.evaluate(ticket.params, ticket.batch_stats)
    row = {'lambda': lam, **_sparsity(masks), 'test_accuracy':
           test['accuracy'], 'test_loss': test['loss']}
    results['tickets'].append(row)
    results.update(test_accuracy=row['test_accuracy'],
                   global_sparsity=row['sparsity'],
                   wall_time_s=time.time() - t_start)
    logging.info('cs lambda %g ticket: sparsity %.4f, test accuracy %.4f',
                 lam, row['sparsity'], row['test_accuracy'])
    _write(workdir, results)
  results['complete'] = True
  results['wall_time_s'] = time.time() - t_start
  _write(workdir, results)
  return results
