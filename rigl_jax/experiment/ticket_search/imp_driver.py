"""Iterative magnitude pruning with rewinding (Frankle et al. 2019; the
open_lth procedure): train, prune the smallest weights, rewind, repeat."""

from __future__ import annotations

import time
from typing import Any

from absl import logging
import jax
import ml_collections

import rigl_jax
from rigl_jax.experiment import builders
from rigl_jax.experiment.ticket_search import common
from rigl_jax.tickets import imp


def run_imp(config: ml_collections.ConfigDict, workdir: str
            ) -> dict[str, Any]:
  """Iterative magnitude pruning with rewinding (Frankle et al. 2019).

  Round 0 trains the dense network for the full budget (``total_steps``);
  each of the ``config.imp.rounds`` later rounds removes
  ``config.imp.prune_fraction`` of the remaining prunable weights by
  magnitude (``config.imp.scope``: ``'global'`` or ``'layer'``), rewinds to
  step ``config.imp.rewind_step`` of round 0 and trains the new mask with
  static sparse training to ``total_steps``. As in open_lth, the rewind
  restores the weights and batch-norm statistics of step k and starts a
  fresh optimizer whose learning-rate schedule is fast-forwarded to k
  (training/train.py:64-88; lottery/runner.py `_train_level`).

  ``config.imp.controls`` adds open_lth's control branches at every round,
  each trained like the round itself: ``'random_reinit'`` (the round's
  mask on a fresh random initialisation) and ``'random_mask'`` (a random
  mask with the round's per-layer sparsities on the rewound weights).

  Returns:
    The results written to ``<workdir>/results.json``: ``curve`` (per round:
    ``round``, ``sparsity`` over the prunable leaves, ``nnz``, ``prunable``,
    ``layer_sparsity``, ``test_accuracy``, ``test_loss``), ``controls``
    (``{control: curve}`` for rounds >= 1), the last round's
    ``test_accuracy`` and ``global_sparsity``, ``rewind_step``, ``steps``
    per round, ``wall_time_s``, ``complete`` and the ``config``.
  """
  t_start = time.time()
  setup = common.prepare(config, workdir)  # validates config.imp too
  c = common.section(config, 'imp')
  rounds, fraction, scope = c['rounds'], float(c['prune_fraction']), c['scope']
  k = common.check_int('imp.rewind_step', c['rewind_step'], 0,
                       setup.total_steps)
  log_every = config.get('log_every_steps') or setup.total_steps

  state = builders.create_train_state(config, setup.model,
                                      setup.static_tx(None), setup.info,
                                      jax.random.PRNGKey(config.seed))
  masks = rigl_jax.get_masks(state.opt_state)
  controls = tuple(c['controls'])
  results = {'ticket_search': 'imp', 'rewind_step': k, 'prune_fraction':
             fraction, 'scope': scope, 'steps': setup.total_steps,
             'curve': [], 'complete': False, 'config': config.to_dict()}
  if controls:
    results['controls'] = {name: [] for name in controls}
  saved = None
  for r in range(rounds + 1):
    if r > 0:
      masks = imp.prune_remaining(state.params, masks, fraction, scope)
      for name in controls:
        control = _control_start(name, setup, config, saved, masks, r)
        control = common.train_to(setup, control, setup.total_steps,
                                  log_every, f'imp round {r} ({name})')
        test = setup.evaluate(control.params, control.batch_stats)
        results['controls'][name].append({
            'round': r, **common.sparsity(
                rigl_jax.get_masks(control.opt_state)),
            'test_accuracy': test['accuracy'], 'test_loss': test['loss']})
      state = common.rewind(saved, masks, setup.inner)
    elif k == 0:
      saved = common.snapshot(state)
    else:  # round 0 up to step k, snapshot, then on to the end
      state = common.train_to(setup, state, k, log_every, 'imp round 0')
      saved = common.snapshot(state)
    state = common.train_to(setup, state, setup.total_steps, log_every,
                     f'imp round {r}')
    # The masks this round trained with (the arrays given to `init` were
    # donated with the state).
    masks = rigl_jax.get_masks(state.opt_state)
    test = setup.evaluate(state.params, state.batch_stats)
    row = {'round': r, **common.sparsity(masks),
           'test_accuracy': test['accuracy'], 'test_loss': test['loss']}
    results['curve'].append(row)
    results.update(test_accuracy=row['test_accuracy'],
                   global_sparsity=row['sparsity'],
                   wall_time_s=time.time() - t_start)
    logging.info('imp round %d: sparsity %.4f, test accuracy %.4f', r,
                 row['sparsity'], row['test_accuracy'])
    common.write(workdir, results)
  results['complete'] = True
  results['wall_time_s'] = time.time() - t_start
  common.write(workdir, results)
  return results


# Folded into the run's key for a control's fresh initialisation / mask.
_CONTROL_STREAM = 1_000_003


def _control_start(name: str, setup: common.Setup,
                   config: ml_collections.ConfigDict, saved: Any,
                   masks: Any, r: int) -> Any:
  """The state a control branch of round ``r`` trains from (step k)."""
  key = jax.random.fold_in(jax.random.PRNGKey(config.seed),
                           _CONTROL_STREAM + r)
  if name == 'random_mask':
    return common.rewind(saved, imp.shuffle_layerwise(masks, key),
                         setup.inner)
  # random_reinit: a new initialisation (weights and batch statistics) at
  # the rewind step, with the round's mask.
  fresh = jax.device_get(builders.create_train_state(
      config, setup.model, setup.static_tx(None), setup.info, key))
  fresh = fresh.replace(step=saved.step, rng=saved.rng,
                        opt_state=saved.opt_state)
  return common.rewind(fresh, masks, setup.inner)
