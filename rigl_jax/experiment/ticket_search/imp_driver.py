"""Iterative magnitude pruning with rewinding (Frankle et al. 2019; the
open_lth procedure): train, prune the smallest weights, rewind, repeat."""

from __future__ import annotations

import time
from typing import Any

import jax
import ml_collections

import rigl_jax
from rigl_jax.experiment import builders
from rigl_jax.experiment import console
from rigl_jax.experiment import preemption
from rigl_jax.experiment.ticket_search import common
from rigl_jax.experiment.ticket_search import progress as progress_lib
from rigl_jax.experiment.ticket_search import schema
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
  c = schema.section(config, 'imp')
  rounds, fraction, scope = c['rounds'], float(c['prune_fraction']), c['scope']
  k = common.check_int('imp.rewind_step', c['rewind_step'], 0,
                       setup.total_steps)
  log_every = config.get('log_every_steps') or setup.total_steps
  total = setup.total_steps
  controls = tuple(c['controls'])

  init = builders.create_train_state(config, setup.model,
                                     setup.static_tx(None), setup.info,
                                     jax.random.PRNGKey(config.seed))
  # The phases, in order: round 0, then per round its training (the
  # lottery line) and its control branches (which read that round's masks).
  phases = [(0, None)] + [(r, name) for r in range(1, rounds + 1)
                          for name in (None,) + controls]
  results = {'ticket_search': 'imp', 'rewind_step': k, 'prune_fraction':
             fraction, 'scope': scope, 'steps': total,
             'curve': [], 'complete': False, 'config': config.to_dict()}
  if controls:
    results['controls'] = {name: [] for name in controls}

  with preemption.SigtermFlag() as sigterm:
    progress = progress_lib.Progress(config, workdir, total, sigterm)
    # What the search carries: the state in training, the lottery line's
    # last trained state (its masks are the round's) and the iterate at
    # the rewind step. Unset ones hold a placeholder of the same structure.
    resumed = progress.restore({'train': init, 'line': init, 'saved': init})
    first, line, saved, cur = 0, None, None, None
    if resumed is not None:
      first, results = resumed.phase, resumed.results
      cur = resumed.trees['train']
      if resumed.phase > 0 or resumed.step >= k:  # past the snapshot
        saved = common.snapshot(resumed.trees['saved'])
      if resumed.phase > 0 or resumed.step == total:  # round 0 is done
        line = resumed.trees['line']
      if resumed.step == total:  # that phase is done
        first, cur = first + 1, None
      console.say('imp: resuming at phase %d, step %d', resumed.phase,
                  resumed.step)
    elapsed = results.get('wall_time_s', 0.0)

    for phase in range(first, len(phases)):
      r, name = phases[phase]
      if cur is None:  # the phase starts here
        if r == 0:
          cur = init
        elif name is None:
          masks = imp.prune_remaining(
              line.params, rigl_jax.get_masks(line.opt_state), fraction, scope)
          cur = common.rewind(saved, masks, setup.inner)
        else:
          cur = _control_start(name, setup, config, saved,
                               rigl_jax.get_masks(line.opt_state), r)
      tag = f'imp round {r}' + (f' ({name})' if name else '')
      hook = progress.periodic(
          phase, lambda st: {'train': st, 'line': st if line is None else line,
                             'saved': st if saved is None else saved},
          results)
      if saved is None:  # round 0 up to the rewind step
        cur = common.train_to(setup, cur, k, log_every, tag, hook)
        saved = common.snapshot(cur)
      cur = common.train_to(setup, cur, total, log_every, tag, hook)
      test = setup.evaluate(cur.params, cur.batch_stats)
      row = {'round': r, **common.sparsity(rigl_jax.get_masks(cur.opt_state)),
             'test_accuracy': test['accuracy'], 'test_loss': test['loss']}
      if name is None:
        line = cur
        results['curve'].append(row)
        results.update(test_accuracy=row['test_accuracy'],
                       global_sparsity=row['sparsity'])
      else:
        results['controls'][name].append(row)
      results['wall_time_s'] = elapsed + time.time() - t_start
      console.say('%s: sparsity %.4f, test accuracy %.4f', tag,
                  row['sparsity'], row['test_accuracy'])
      common.write(workdir, results)
      progress.save(phase, total, {'train': cur, 'line': line,
                                   'saved': saved}, results)
      cur = None
    progress.close()
  results['complete'] = True
  results['wall_time_s'] = elapsed + time.time() - t_start
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
