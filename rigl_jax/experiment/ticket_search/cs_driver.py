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
from rigl_jax.experiment import console
from rigl_jax.experiment import optimizers
from rigl_jax.experiment import preemption
from rigl_jax.experiment import train_step as train_step_lib
from rigl_jax.experiment.ticket_search import common
from rigl_jax.experiment.ticket_search import progress as progress_lib
from rigl_jax.experiment.ticket_search import schema
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
      loss, correct = train_step_lib.loss_and_metrics(
          out, batch, kind, num_classes, label_smoothing)
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
  c = schema.section(config, 'cs')
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

  results = {'ticket_search': 'cs', 'mask_init': s0, 'final_temperature':
             final_temp, 'rounds': rounds, 'rewind_step': k,
             'steps': setup.total_steps, 'epochs_per_round': epochs,
             'curve': [], 'tickets': [], 'complete': False,
             'config': config.to_dict()}
  total = setup.total_steps

  def beta_at(i):  # the temperature of step i + 1 of a round
    return cs.temperature(i // steps_per_epoch, epochs, final_temp)

  def fresh():
    """Round 0's start (the same initial weights for every lambda)."""
    init = builders.create_train_state(config, setup.model, dense_tx, info,
                                       jax.random.PRNGKey(config.seed))
    logits = cs.init_logits(init.params, s0, setup.is_sparse)
    return SearchState(
        step=jnp.zeros([], jnp.int32), params=init.params, logits=logits,
        batch_stats=init.batch_stats, opt_state=dense_tx.init(init.params),
        mask_opt_state=mask_tx.init(logits), rng=init.rng), init

  def next_round(final, rng):
    """A later round's start: logits reset, schedules restarted, both
    optimizers' momentum kept (main.py:110-118)."""
    return SearchState(
        step=jnp.zeros([], jnp.int32), params=final.params,
        logits=cs.reset_logits(final.logits, s0),
        batch_stats=final.batch_stats,
        opt_state=common.fast_forward(final.opt_state, 0),
        mask_opt_state=common.fast_forward(final.mask_opt_state, 0),
        rng=jnp.array(rng))

  with preemption.SigtermFlag() as sigterm:
    progress = progress_lib.Progress(config, workdir, total, sigterm)
    search0, init0 = fresh()
    # Carried: the search iterate, the rewind point (round 0, step k) and
    # the ticket in retraining; unset ones hold a placeholder.
    resumed = progress.restore({'search': search0, 'saved': init0,
                                'ticket': init0})
    first, cur = 0, None
    if resumed is not None:
      results, first = resumed.results, resumed.phase
      console.say('cs: resuming at phase %d, step %d', resumed.phase,
                   resumed.step)
    elapsed = results.get('wall_time_s', 0.0)
    ticket_step = None  # built with the first logits (which leaves are sparse)

    for li, lam in enumerate(lambdas):
      if (li + 1) * (rounds + 1) <= first:
        continue  # this lambda is done
      rng, saved, final = None, None, None
      for r in range(rounds + 1):  # the rounds, then the ticket
        phase = li * (rounds + 1) + r
        if phase < first:
          continue
        if rng is None:
          search0, _ = fresh()
          rng = jax.device_get(search0.rng)  # each round restarts from it
        if resumed is not None and phase == first:  # the phase resumes
          trees, step = resumed.trees, resumed.step
          if r > 0 or step >= k:
            saved = common.snapshot(trees['saved'])
          final = trees['search']
          cur = (trees['ticket'] if r == rounds else trees['search'])
          resumed = None
          if step == total:  # that phase is done
            cur = None
            continue
        elif r == 0:
          cur = search0
        elif r < rounds:
          cur = next_round(final, rng)
        else:
          cur = common.rewind(saved, cs.hard_masks(final.logits), setup.inner,
                              start_step=0)
        if ticket_step is None:
          sparse = jax.tree.map(lambda x: None if x is None else True,
                                final.logits if final is not None
                                else cur.logits, is_leaf=lambda x: x is None)
          ticket_step = train_step_lib.make_train_step(
              setup.model, dense_tx, setup.lr_fn, info.kind, info.num_classes,
              config.optimizer.label_smoothing,
              param_transform=lambda p, sp=sparse: cs.scaled_params(p, sp,
                                                                    scale))
        if r == rounds:
          cur = _retrain_ticket(setup._replace(train_step=ticket_step),
                                  progress, phase, final, saved, cur, lam,
                                  log_every, scale, results)
        else:
          final, saved = _search_round(
              setup, progress, phase, cur, saved, search_step, beta_at, lam,
              r, k, log_every, results)
        results['wall_time_s'] = elapsed + time.time() - t_start
        common.write(workdir, results)
        progress.save(phase, total, {'search': final, 'saved': saved,
                                     'ticket': (cur if r == rounds else
                                                final.train_state())},
                      results)
        cur = None
    progress.close()
  results['complete'] = True
  results['wall_time_s'] = elapsed + time.time() - t_start
  common.write(workdir, results)
  return results


def _search_round(setup, progress, phase, state, saved, search_step, beta_at,
                  lam, r, k, log_every, results):
  """Trains one CS round from ``state`` (at its step) to the end, records
  its row; returns the final iterate and the rewind point."""
  total = setup.total_steps
  start = int(state.step)
  # Each round reads a fresh stretch of the (deterministic) data stream.
  batches = setup.data.train_batches(r * total + start)
  hook = progress.periodic(phase, lambda st: {
      'search': st, 'saved': st.train_state() if saved is None else saved,
      'ticket': st.train_state()}, results)
  t0 = time.time()
  for i in range(start, total):
    if r == 0 and i == k:
      saved = common.snapshot(state.train_state())
    state, metrics = search_step(state, next(batches), beta_at(i),
                                 jnp.float32(lam))
    hook(state, i + 1)
    if (i + 1) % log_every == 0 or i + 1 == total:
      common.check_finite(metrics['loss'], f'cs lambda {lam:g} round {r}',
                          i + 1)
      logging.info(
          'cs lambda %g round %d: step %d/%d, beta %.1f, loss %.4f, '
          'penalty %.1f, %.1f steps/s', lam, r, i + 1, total,
          float(beta_at(i)), float(metrics['loss']),
          float(metrics['penalty']), (i + 1 - start) / max(time.time() - t0,
                                                           1e-9))
  beta = beta_at(total - 1)
  masks = cs.hard_masks(state.logits)
  s0 = results['mask_init']
  soft = setup.evaluate(cs.gated_params(state.params, state.logits, beta, s0),
                        state.batch_stats)
  hard = setup.evaluate(cs.scaled_params(
      rigl_jax.apply_masks(state.params, masks), masks, cs.ticket_scale(s0)),
      state.batch_stats)
  row = {'lambda': lam, 'round': r, **common.sparsity(masks),
         'final_temperature': float(beta),
         'search_test_accuracy': soft['accuracy'],
         'hard_mask_test_accuracy': hard['accuracy']}
  results['curve'].append(row)
  console.say('cs lambda %g round %d: sparsity %.4f, search accuracy '
              '%.4f, hard-mask accuracy %.4f', lam, r, row['sparsity'],
               row['search_test_accuracy'], row['hard_mask_test_accuracy'])
  return state, saved


def _retrain_ticket(setup, progress, phase, final, saved, ticket, lam,
                    log_every, scale, results):
  """Retrains the ticket from ``ticket`` (at its step) and records its row;
  returns the retrained ticket."""
  hook = progress.periodic(phase, lambda st: {
      'search': final, 'saved': saved, 'ticket': st}, results)
  ticket = common.train_to(setup, ticket, setup.total_steps, log_every,
                           f'cs lambda {lam:g} ticket', hook)
  masks = rigl_jax.get_masks(ticket.opt_state)
  test = setup.evaluate(cs.scaled_params(ticket.params, masks, scale),
                        ticket.batch_stats)
  row = {'lambda': lam, **common.sparsity(masks), 'test_accuracy':
         test['accuracy'], 'test_loss': test['loss']}
  results['tickets'].append(row)
  results.update(test_accuracy=row['test_accuracy'],
                 global_sparsity=row['sparsity'])
  console.say('cs lambda %g ticket: sparsity %.4f, test accuracy %.4f',
              lam, row['sparsity'], row['test_accuracy'])
  return ticket
