"""Continuous Sparsification (Savarese et al. 2020): learn soft masks
with an L0-style penalty and an annealed temperature, then rewind and
retrain the hard ticket."""

from __future__ import annotations

import math
import time
from typing import Any, Callable

from absl import logging
import flax
import jax
import jax.numpy as jnp
import ml_collections
import optax

import rigl_jax
from rigl_jax.experiment import builders
from rigl_jax.experiment import optimizers
from rigl_jax.experiment import train
from rigl_jax.experiment.ticket_search import common
from rigl_jax.tickets import cs


@flax.struct.dataclass
class SearchState:
  """A CS search iterate: a `builders.TrainState`'s fields plus mask logits."""
  step: jax.Array
  params: Any
  logits: Any
  batch_stats: Any
  opt_state: Any
  mask_opt_state: Any
  rng: jax.Array

  def train_state(self) -> builders.TrainState:
    return builders.TrainState(step=self.step, params=self.params,
                            batch_stats=self.batch_stats,
                            opt_state=self.opt_state, rng=self.rng)


def make_search_step(model, tx, mask_tx, kind: str, num_classes: int,
                     label_smoothing: float, s0: float) -> Callable:
  """The jitted CS step ``(state, batch, beta, lam) -> (state, metrics)``.

  The model sees ``w * sigmoid(beta s) / sigmoid(s0)`` on sparse leaves; the
  loss is the cross-entropy plus ``lam * sum(sigmoid(beta s) / sigmoid(s0))``
  (`cs.penalty`). Weights are updated by ``tx``, logits by ``mask_tx`` (no
  weight decay).
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
      pen = cs.penalty(logits, beta, s0)
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
  between rounds logits above ``config.cs.mask_init`` are reset to it, the
  learning-rate schedules restart and the weight and logit optimizers keep
  their momentum; weights are not rewound). The ticket ``1[s > 0]`` is then
  trained with static sparse training, ``w * 1[s > 0] / sigmoid(s0)``, from
  the weights and batch statistics of step ``config.cs.rewind_step`` of the
  first round with a fresh optimizer over the whole schedule
  (``total_steps``). All as in the authors' code
  (lolemacs/continuous-sparsification main.py:110-123, models/layers.py).

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
  setup = common.prepare(config, workdir)  # validates config.cs too
  c = common.section(config, 'cs')
  lambdas = [float(x) for x in (c['lambdas'] if isinstance(
      c['lambdas'], (list, tuple)) else [c['lambdas']])]
  rounds, s0 = c['rounds'], float(c['mask_init'])
  final_temp = float(c['final_temperature'])
  k = common.check_int('cs.rewind_step', c['rewind_step'], 0, setup.total_steps)
  info = setup.info
  steps_per_epoch = max(1, info.num_train // config.data.batch_size)
  epochs = math.ceil(setup.total_steps / steps_per_epoch)
  log_every = config.get('log_every_steps') or setup.total_steps

  mask_config = config.copy_and_resolve_references()
  mask_config.optimizer.learning_rate = float(c['mask_lr'])
  mask_lr_fn = optimizers.create_learning_rate_fn(mask_config,
                                                 setup.total_steps)
  mask_tx = optax.sgd(mask_lr_fn, momentum=c['mask_momentum'] or None,
                      nesterov=c['mask_nesterov'])
  dense_tx = setup.static_tx(None)
  search_step = make_search_step(
      setup.model, dense_tx, mask_tx, info.kind, info.num_classes,
      config.optimizer.label_smoothing, s0)
  # The ticket's model sees its sparse weights times 1 / sigmoid(s0).
  scale = cs.ticket_scale(s0)
  ticket_step = None  # built with the first logits (which leaves are sparse)

  results = {'ticket_search': 'cs', 'mask_init': s0, 'final_temperature':
             final_temp, 'rounds': rounds, 'rewind_step': k,
             'steps': setup.total_steps, 'epochs_per_round': epochs,
             'curve': [], 'tickets': [], 'complete': False,
             'config': config.to_dict()}
  for lam in lambdas:
    init = builders.create_train_state(config, setup.model, dense_tx, info,
                                    jax.random.PRNGKey(config.seed))
    params, batch_stats = init.params, init.batch_stats
    rng = jax.device_get(init.rng)  # a fresh copy per round (donation)
    logits = cs.init_logits(params, s0, setup.is_sparse)
    if ticket_step is None:
      sparse = jax.tree.map(lambda x: None if x is None else True, logits,
                            is_leaf=lambda x: x is None)
      ticket_step = train.make_train_step(
          setup.model, dense_tx, setup.lr_fn, info.kind, info.num_classes,
          config.optimizer.label_smoothing,
          param_transform=lambda p, sp=sparse: cs.scaled_params(p, sp, scale))
    # Both optimizers live across the rounds (main.py:110-118).
    opt_state, mask_opt_state = dense_tx.init(params), mask_tx.init(logits)
    saved = None
    for r in range(rounds):
      if r > 0:
        logits = cs.reset_logits(logits, s0)
      state = SearchState(
          step=jnp.zeros([], jnp.int32), params=params, logits=logits,
          batch_stats=batch_stats,
          opt_state=common.fast_forward(opt_state, 0),
          mask_opt_state=common.fast_forward(mask_opt_state, 0),
          rng=jnp.array(rng))
      # Each round reads a fresh stretch of the (deterministic) data stream.
      batches = setup.data.train_batches(r * setup.total_steps)
      beta = None
      t0 = time.time()
      for i in range(setup.total_steps):
        if r == 0 and i == k:
          saved = common.snapshot(state.train_state())
        if i % steps_per_epoch == 0:
          beta = cs.temperature(i // steps_per_epoch, epochs, final_temp)
        state, metrics = search_step(state, next(batches), beta,
                                     jnp.float32(lam))
        if (i + 1) % log_every == 0 or i + 1 == setup.total_steps:
          common.check_finite(metrics['loss'],
                              f'cs lambda {lam:g} round {r}', i + 1)
          logging.info(
              'cs lambda %g round %d: step %d/%d, beta %.1f, loss %.4f, '
              'penalty %.1f, %.1f steps/s', lam, r, i + 1, setup.total_steps,
              float(beta), float(metrics['loss']), float(metrics['penalty']),
              (i + 1) / max(time.time() - t0, 1e-9))
      params, logits, batch_stats = (state.params, state.logits,
                                     state.batch_stats)
      opt_state, mask_opt_state = state.opt_state, state.mask_opt_state
      masks = cs.hard_masks(logits)
      soft = setup.evaluate(cs.gated_params(params, logits, beta, s0),
                            batch_stats)
      hard = setup.evaluate(cs.scaled_params(
          rigl_jax.apply_masks(params, masks), masks, scale), batch_stats)
      row = {'lambda': lam, 'round': r, **common.sparsity(masks),
             'final_temperature': float(beta),
             'search_test_accuracy': soft['accuracy'],
             'hard_mask_test_accuracy': hard['accuracy']}
      results['curve'].append(row)
      logging.info('cs lambda %g round %d: sparsity %.4f, search accuracy '
                   '%.4f, hard-mask accuracy %.4f', lam, r, row['sparsity'],
                   row['search_test_accuracy'], row['hard_mask_test_accuracy'])
      results['wall_time_s'] = time.time() - t_start
      common.write(workdir, results)

    ticket = common.rewind(saved, masks, setup.inner, start_step=0)
    ticket = common.train_to(setup._replace(train_step=ticket_step), ticket,
                             setup.total_steps, log_every,
                             f'cs lambda {lam:g} ticket')
    masks = rigl_jax.get_masks(ticket.opt_state)
    test = setup.evaluate(cs.scaled_params(ticket.params, masks, scale),
                          ticket.batch_stats)
    row = {'lambda': lam, **common.sparsity(masks), 'test_accuracy':
           test['accuracy'], 'test_loss': test['loss']}
    results['tickets'].append(row)
    results.update(test_accuracy=row['test_accuracy'],
                   global_sparsity=row['sparsity'],
                   wall_time_s=time.time() - t_start)
    logging.info('cs lambda %g ticket: sparsity %.4f, test accuracy %.4f',
                 lam, row['sparsity'], row['test_accuracy'])
    common.write(workdir, results)
  results['complete'] = True
  results['wall_time_s'] = time.time() - t_start
  common.write(workdir, results)
  return results
