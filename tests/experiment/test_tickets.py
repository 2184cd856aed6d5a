"""Ticket search: CS and IMP pieces by hand, rewinding bit for bit, drivers."""

import json
import math
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import rigl_jax
from rigl_jax.experiment import builders
from rigl_jax.experiment import models
from rigl_jax import tickets
from rigl_jax.experiment import ticket_search as search
from configs import cs_fashion_mnist
from configs import imp_fashion_mnist
from tests import helpers

REPO = helpers.REPO


def _sigmoid(x):
  return 1.0 / (1.0 + np.exp(-np.asarray(x, np.float64)))


def _tiny(config, steps=8):
  """A few steps of a 16-8 MLP on 1% of Fashion-MNIST (4 steps per epoch)."""
  config.data.train_fraction = 0.01
  config.data.eval_batch_size = 2500
  config.model.name = 'mlp'
  config.model.kwargs = {'hidden_sizes': (16, 8)}
  config.num_train_steps = steps
  config.log_every_steps = 4
  return config


def _random_params(scales=(1.0, 0.3, 3.0), seed=0):
  shapes = [(30, 20), (20, 12), (12, 6)]
  keys = jax.random.split(jax.random.PRNGKey(seed), len(shapes))
  return {f'l{i}': {'kernel': s * jax.random.normal(k, shape),
                    'bias': jnp.zeros(shape[1])}
          for i, (k, shape, s) in enumerate(zip(keys, shapes, scales))}


def _all_true(params):
  return jax.tree.map(lambda p: jnp.ones(p.shape, bool) if p.ndim > 1 else
                      None, params)


# --- Continuous Sparsification: the pure pieces ---------------------------


def test_cs_gate_is_the_formula_and_the_ticket_is_binary():
  params = _random_params()
  s0, beta = 0.3, 7.5
  logits = tickets.init_logits(params, s0)
  assert logits['l0']['bias'] is None
  np.testing.assert_array_equal(logits['l1']['kernel'],
                                np.full((20, 12), 0.3, np.float32))
  # At beta = 1 and s = s0 the gate is exactly 1: the search starts from w.
  gated = tickets.gated_params(params, logits, 1.0, s0)
  for a, b in zip(jax.tree.leaves(gated), jax.tree.leaves(params)):
    np.testing.assert_array_equal(a, b)
  # Elsewhere it is w * sigmoid(beta s) / sigmoid(s0).
  logits = jax.tree.map(
      lambda s: s + jax.random.uniform(jax.random.PRNGKey(1), s.shape,
                                       minval=-1, maxval=1), logits)
  gated = tickets.gated_params(params, logits, beta, s0)
  for name in params:
    w = np.asarray(params[name]['kernel'], np.float64)
    s = np.asarray(logits[name]['kernel'], np.float64)
    np.testing.assert_allclose(gated[name]['kernel'],
                               w * _sigmoid(beta * s) / _sigmoid(s0),
                               rtol=1e-5, atol=1e-7)
    np.testing.assert_array_equal(gated[name]['bias'], params[name]['bias'])
  # The penalty is the sum of the gates (the authors' code sums the masks).
  expected_penalty = sum(_sigmoid(beta * np.asarray(s)).sum()
                         for s in jax.tree.leaves(logits)) / _sigmoid(s0)
  assert float(jax.jit(tickets.penalty)(logits, beta, s0)) == pytest.approx(
      expected_penalty, rel=1e-5)
  # The ticket: exactly 1[s > 0], bool.
  masks = tickets.hard_masks(logits)
  for name in params:
    m = masks[name]['kernel']
    assert m.dtype == jnp.bool_ and masks[name]['bias'] is None
    np.testing.assert_array_equal(m, np.asarray(logits[name]['kernel']) > 0)
    ticket = rigl_jax.apply_masks(params, masks)[name]['kernel']
    np.testing.assert_array_equal(
        ticket, np.where(m, np.asarray(params[name]['kernel']), 0.0))


def test_cs_penalty_and_ticket_scale_hand_computed():
  # sigmoid(2 * 0) + sigmoid(2) + sigmoid(-2) = 0.5 + 1, over sigmoid(0).
  logits = {'a': {'kernel': jnp.array([0.0, 1.0, -1.0]), 'bias': None}}
  assert float(tickets.penalty(logits, 2.0, 0.0)) == pytest.approx(3.0)
  assert float(tickets.penalty(logits, 2.0, 1.0)) == pytest.approx(
      1.5 / _sigmoid(1.0), rel=1e-6)
  # The retrained ticket sees w * 1[s > 0] / sigmoid(s0): twice w at s0 = 0.
  assert tickets.ticket_scale(0.0) == 2.0
  assert tickets.ticket_scale(-0.1) == pytest.approx(1 / _sigmoid(-0.1))
  params = {'a': {'kernel': jnp.array([1.0, -2.0, 3.0]),
                  'bias': jnp.array([0.5])}}
  masks = {'a': {'kernel': jnp.array([True, False, True]), 'bias': None}}
  out = tickets.scaled_params(rigl_jax.apply_masks(params, masks), masks, 2.0)
  np.testing.assert_array_equal(out['a']['kernel'], [2.0, 0.0, 6.0])
  np.testing.assert_array_equal(out['a']['bias'], [0.5])


def test_cs_ticket_retrains_from_a_fresh_optimizer_over_the_whole_schedule(
    tmp_path):
  config = _tiny(cs_fashion_mnist.get_config(), steps=8)
  setup = search.prepare(config, str(tmp_path))
  state = builders.create_train_state(config, setup.model,
                                      setup.static_tx(None), setup.info,
                                      jax.random.PRNGKey(0))
  saved = search.snapshot(search.train_to(setup, state, 3, 100, 't'))
  ticket = search.rewind(saved, rigl_jax.get_masks(saved.opt_state),
                         setup.inner, start_step=0)
  assert int(ticket.step) == 0
  inner = rigl_jax.get_sparse_state(ticket.opt_state).inner_state
  for x in jax.tree.leaves(
      inner, is_leaf=lambda x: isinstance(x, optax.ScaleByScheduleState)):
    if isinstance(x, optax.ScaleByScheduleState):
      assert int(x.count) == 0
  assert all(not np.any(np.asarray(t)) for t in jax.tree.leaves(inner))
  for a, b in zip(jax.tree.leaves(saved.params),
                  jax.tree.leaves(ticket.params)):
    np.testing.assert_array_equal(a, np.asarray(b))


def test_cs_temperature_reaches_the_final_value_at_the_last_epoch():
  betas = [float(tickets.temperature(e, 5, 200.0)) for e in range(5)]
  assert betas[0] == 1.0 and betas[-1] == 200.0
  np.testing.assert_allclose(betas, [200.0**(e / 4) for e in range(5)],
                             rtol=1e-6)
  ratios = np.array(betas[1:]) / np.array(betas[:-1])
  np.testing.assert_allclose(ratios, 200.0**0.25, rtol=1e-5)  # exponential
  assert float(tickets.temperature(0, 1, 200.0)) == 200.0  # one-epoch round
  with pytest.raises(ValueError):
    tickets.temperature(0, 0, 200.0)


def test_cs_logits_above_s0_reset_to_s0():
  logits = {'a': jnp.array([-2.0, 0.1, 0.2, 0.25, 3.0]), 'b': None}
  out = tickets.reset_logits(logits, 0.2)
  np.testing.assert_array_equal(out['a'], np.array([-2.0, 0.1, 0.2, 0.2, 0.2],
                                                   np.float32))
  assert out['b'] is None


# --- IMP: magnitude pruning of the remaining weights ----------------------


@pytest.mark.parametrize('scope', ['global', 'layer'])
def test_imp_sparsity_after_n_rounds(scope):
  params = _random_params()
  masks = _all_true(params)
  total = sum(p.size for p in jax.tree.leaves(params) if p.ndim > 1)
  layer_remaining = {n: params[n]['kernel'].size for n in params}
  for n in range(1, 8):
    masks = tickets.prune_remaining(params, masks, 0.2, scope)
    nnz = sum(int(m.sum()) for m in jax.tree.leaves(masks))
    for name in params:  # layer-wise: exactly floor(20%) of each remaining
      layer_remaining[name] -= math.floor(0.2 * layer_remaining[name] + 1e-9)
    if scope == 'global':
      assert nnz == tickets.expected_remaining(total, n, 0.2)
    else:
      for name in params:
        assert int(masks[name]['kernel'].sum()) == layer_remaining[name]
    # 1 - 0.8^n up to the floor of each round (at most one weight per round
    # and layer).
    assert abs((1 - nnz / total) - (1 - 0.8**n)) <= 3 * n / total
  assert tickets.num_pruned(0.2, 10) == 2
  assert tickets.num_pruned(0.29, 100) == 29  # 0.29 * 100 is 28.999...


def test_imp_global_and_layerwise_differ_as_they_should():
  params = _random_params(scales=(1.0, 0.3, 3.0))  # layers of different size
  masks = _all_true(params)
  glob = tickets.prune_remaining(params, masks, 0.2, 'global')
  layer = tickets.prune_remaining(params, masks, 0.2, 'layer')
  g_sp = {n: 1 - float(glob[n]['kernel'].mean()) for n in params}
  # Global: one threshold across layers, so per-layer sparsities differ (the
  # small-scale layer loses most).
  assert g_sp['l1'] > 0.4 > 0.2 > g_sp['l0'] > g_sp['l2']
  kept = np.concatenate([np.abs(np.asarray(params[n]['kernel']))[
      np.asarray(glob[n]['kernel'])] for n in params])
  pruned = np.concatenate([np.abs(np.asarray(params[n]['kernel']))[
      ~np.asarray(glob[n]['kernel'])] for n in params])
  assert pruned.max() <= kept.min()
  # Layer-wise: every layer exactly floor(20%) of its remaining, each by its
  # own threshold.
  for n in params:
    w = np.abs(np.asarray(params[n]['kernel']))
    m = np.asarray(layer[n]['kernel'])
    assert (~m).sum() == math.floor(0.2 * m.size)
    assert w[~m].max() <= w[m].min()
  # A second layer-wise round prunes 20% of what remains, never regrows.
  again = tickets.prune_remaining(params, layer, 0.2, 'layer')
  for n in params:
    r = int(layer[n]['kernel'].sum())
    assert int(again[n]['kernel'].sum()) == r - math.floor(0.2 * r)
    assert not np.any(np.asarray(again[n]['kernel']) &
                      ~np.asarray(layer[n]['kernel']))
  with pytest.raises(ValueError,
                     match=r"valid choices are \['global', 'layer'\]"):
    tickets.prune_remaining(params, masks, 0.2, 'local')


# --- Rewinding -------------------------------------------------------------


def test_rewinding_restores_the_saved_iterate_bit_for_bit(tmp_path):
  config = _tiny(imp_fashion_mnist.get_config(), steps=8)
  setup = search.prepare(config, str(tmp_path))
  tx = setup.static_tx(None)
  state = builders.create_train_state(config, setup.model, tx, setup.info,
                                   jax.random.PRNGKey(0))
  k = 3
  state = search.train_to(setup, state, k, 100, 't')
  saved = search.snapshot(state)
  final = search.snapshot(search.train_to(setup, state, 8, 100, 't'))
  assert int(saved.step) == k and int(final.step) == 8

  masks = rigl_jax.get_masks(saved.opt_state)
  rewound = search.rewind(saved, masks)
  leaves = jax.tree_util.tree_leaves_with_path(saved)
  new = jax.tree.leaves(rewound)
  assert len(leaves) == len(new)
  for (path, a), b in zip(leaves, new):
    assert a.dtype == b.dtype, path
    np.testing.assert_array_equal(a, np.asarray(b), err_msg=str(path))
  # Training on from the rewound iterate repeats the original run exactly
  # (same data from step k, same learning rate, same momentum).
  again = search.snapshot(search.train_to(setup, rewound, 8, 100, 't'))
  for a, b in zip(jax.tree.leaves(final), jax.tree.leaves(again)):
    np.testing.assert_array_equal(a, b)

  # With a pruning mask: the same iterate, pruned weights zero.
  pruned = tickets.prune_remaining(saved.params, masks, 0.5, 'layer')
  rewound = search.rewind(saved, pruned)
  assert int(rewound.step) == k
  for w, m, r in zip(jax.tree.leaves(saved.params),
                     jax.tree.leaves(pruned, is_leaf=lambda x: x is None),
                     jax.tree.leaves(rewound.params)):
    expected = w if m is None else np.where(np.asarray(m), w, 0.0)
    np.testing.assert_array_equal(np.asarray(r), expected)
  for a, b in zip(jax.tree.leaves(rigl_jax.get_sparse_state(
      saved.opt_state).inner_state), jax.tree.leaves(
          rigl_jax.get_sparse_state(rewound.opt_state).inner_state)):
    np.testing.assert_array_equal(a, np.asarray(b))

  # A ticket that pruned a whole layer (CS can): that layer trains at zero.
  empty = jax.tree.map(lambda m: m, pruned, is_leaf=lambda x: x is None)
  name = next(n for n in empty if empty[n].get('kernel') is not None)
  empty[name]['kernel'] = np.zeros_like(np.asarray(empty[name]['kernel']))
  trained = search.train_to(setup, search.rewind(saved, empty), 8, 100, 't')
  assert not np.any(np.asarray(trained.params[name]['kernel']))
  assert np.any(np.asarray(trained.params[name]['bias']))


def test_imp_rewind_starts_a_fresh_optimizer_with_the_schedule_at_k(
    tmp_path):
  """open_lth: weights of step k, a new optimizer, the learning-rate
  schedule stepped k times (training/train.py:64-88)."""
  config = _tiny(imp_fashion_mnist.get_config(), steps=8)
  config.optimizer.schedule = 'cosine'
  setup = search.prepare(config, str(tmp_path))
  state = builders.create_train_state(config, setup.model,
                                      setup.static_tx(None), setup.info,
                                      jax.random.PRNGKey(0))
  k = 3
  saved = search.snapshot(search.train_to(setup, state, k, 100, 't'))
  masks = rigl_jax.get_masks(saved.opt_state)
  rewound = search.rewind(saved, masks, setup.inner)
  inner = rigl_jax.get_sparse_state(rewound.opt_state).inner_state
  fresh = setup.inner.init(saved.params)
  counts = [x.count for x in jax.tree.leaves(
      inner, is_leaf=lambda x: isinstance(x, optax.ScaleByScheduleState))
            if isinstance(x, optax.ScaleByScheduleState)]
  assert [int(c) for c in counts] == [k]
  # Everything else is a new optimizer's: momentum at 0.
  traces = [x for x in jax.tree.leaves(inner) if x.ndim > 0]
  assert traces and all(not np.any(np.asarray(t)) for t in traces)
  assert len(jax.tree.leaves(inner)) == len(jax.tree.leaves(fresh))
  # The saved momentum was not zero: the old rewind kept it.
  kept = rigl_jax.get_sparse_state(search.rewind(saved, masks).opt_state)
  assert any(np.any(np.asarray(t)) for t in jax.tree.leaves(kept.inner_state)
             if t.ndim > 0)
  # The weights, batch statistics and step are the saved ones.
  assert int(rewound.step) == k
  for a, b in zip(jax.tree.leaves(saved.params),
                  jax.tree.leaves(rewound.params)):
    np.testing.assert_array_equal(a, np.asarray(b))


def test_shuffle_layerwise_keeps_each_layer_count():
  masks = tickets.prune_remaining(_random_params(), _all_true(
      _random_params()), 0.6, 'global')
  out = tickets.shuffle_layerwise(masks, jax.random.PRNGKey(3))
  for a, b in zip(jax.tree.leaves(masks), jax.tree.leaves(out)):
    assert int(np.sum(a)) == int(np.sum(b)) and np.any(
        np.asarray(a) != np.asarray(b))


# --- Drivers end to end ----------------------------------------------------


def test_imp_driver_writes_the_curve(tmp_path):
  config = _tiny(imp_fashion_mnist.get_config(), steps=6)
  config.imp.rounds = 2
  config.imp.rewind_step = 2
  results = search.run(config, str(tmp_path))
  saved = json.loads((tmp_path / 'results.json').read_text())
  assert saved['complete'] and saved['ticket_search'] == 'imp'
  curve = saved['curve']
  assert [r['round'] for r in curve] == [0, 1, 2]
  total = curve[0]['prunable']
  assert total == 784 * 16 + 16 * 8 + 8 * 10
  for n, row in enumerate(curve):
    assert row['nnz'] == tickets.expected_remaining(total, n)
    assert row['sparsity'] == pytest.approx(1 - row['nnz'] / total)
    assert 0.0 <= row['test_accuracy'] <= 1.0
  assert saved['global_sparsity'] == curve[-1]['sparsity']
  assert saved['test_accuracy'] == results['test_accuracy'] == curve[-1][
      'test_accuracy']
  assert saved['config']['imp']['rounds'] == 2
  assert 'controls' not in saved


def test_imp_control_branches(tmp_path):
  config = _tiny(imp_fashion_mnist.get_config(), steps=6)
  config.imp.rounds = 2
  config.imp.rewind_step = 2
  config.imp.controls = ('random_reinit', 'random_mask')
  saved = search.run(config, str(tmp_path))
  curve, controls = saved['curve'], saved['controls']
  assert sorted(controls) == ['random_mask', 'random_reinit']
  for name, rows in controls.items():
    assert [r['round'] for r in rows] == [1, 2], name
    for row, lottery in zip(rows, curve[1:]):
      # The same per-layer counts as the round's ticket.
      assert row['nnz'] == lottery['nnz']
      assert row['layer_sparsity'] == pytest.approx(
          lottery['layer_sparsity'])
      assert 0.0 <= row['test_accuracy'] <= 1.0
  # Different starts train to different models.
  assert {r['test_loss'] for r in controls['random_reinit']} != {
      r['test_loss'] for r in curve[1:]}
  with pytest.raises(ValueError, match='controls'):
    bad = _tiny(imp_fashion_mnist.get_config(), steps=6)
    bad.imp.controls = ('shuffle',)
    search.run(bad, str(tmp_path / 'bad'))


def test_cs_driver_writes_the_curve_and_resets_between_rounds(tmp_path,
                                                               monkeypatch):
  config = _tiny(cs_fashion_mnist.get_config(), steps=8)  # 2 epochs of 4
  config.cs.lambdas = (0.0, 1.0)
  config.cs.rounds = 2
  config.cs.rewind_step = 1
  config.cs.mask_init = 0.05
  resets = []
  real_reset = tickets.cs.reset_logits

  def recording_reset(logits, s0):
    out = real_reset(logits, s0)
    resets.append((jax.device_get(logits), jax.device_get(out), s0))
    return out

  monkeypatch.setattr(search.cs, 'reset_logits', recording_reset)
  search.run(config, str(tmp_path))
  saved = json.loads((tmp_path / 'results.json').read_text())
  assert saved['complete'] and saved['ticket_search'] == 'cs'
  assert [(r['lambda'], r['round']) for r in saved['curve']] == [
      (0.0, 0), (0.0, 1), (1.0, 0), (1.0, 1)]
  assert all(r['final_temperature'] == 200.0 for r in saved['curve'])
  assert [t['lambda'] for t in saved['tickets']] == [0.0, 1.0]
  for row in saved['curve'] + saved['tickets']:
    assert 0.0 <= row['sparsity'] <= 1.0
    assert row['sparsity'] == pytest.approx(1 - row['nnz'] / row['prunable'])
  for row in saved['tickets']:
    assert 0.0 <= row['test_accuracy'] <= 1.0
  # The ticket keeps the last round's hard mask; lambda > 0 prunes more.
  assert saved['tickets'][0]['nnz'] == saved['curve'][1]['nnz']
  assert saved['tickets'][1]['sparsity'] > saved['tickets'][0]['sparsity']
  assert saved['global_sparsity'] == saved['tickets'][-1]['sparsity']
  # One reset per lambda between its two rounds: above s0 -> s0, rest kept.
  assert len(resets) == 2
  above = 0
  for before, after, s0 in resets:
    assert s0 == 0.05
    for b, a in zip(jax.tree.leaves(before), jax.tree.leaves(after)):
      assert np.any(b < s0)  # the search moved them
      above += int(np.sum(b > s0))
      np.testing.assert_array_equal(a, np.where(b > s0, np.float32(s0), b))
  assert above > 0


def test_bad_ticket_search_is_one_clear_value_error(tmp_path):
  config = _tiny(imp_fashion_mnist.get_config())
  config.ticket_search = 'lottery'
  with pytest.raises(ValueError, match=r"unknown ticket_search 'lottery'; "
                     r"valid choices are \['cs', 'imp'\]"):
    search.run(config, str(tmp_path))
  proc = subprocess.run(
      [sys.executable, os.path.join(REPO, 'main.py'), '--config',
       os.path.join(REPO, 'configs', 'imp_fashion_mnist.py'), '--workdir',
       str(tmp_path / 'wd'), '--config.ticket_search=lottery'],
      capture_output=True, text=True, cwd=REPO, timeout=120)
  assert proc.returncode == 2
  err = [l for l in proc.stderr.splitlines() if l.startswith('error:')]
  assert len(err) == 1, err
  assert "ticket_search = 'lottery'" in err[0] and "['cs', 'imp']" in err[0]
  assert 'Traceback' not in proc.stderr


def test_bad_ticket_config_field_names_the_valid_ones(tmp_path):
  config = _tiny(cs_fashion_mnist.get_config())
  with config.unlocked():
    config.cs.lamdbas = (1e-5,)
  with pytest.raises(ValueError, match='unknown field'):
    search.run(config, str(tmp_path))


# --- The CIFAR model the ticket papers use ----------------------------------


def test_resnet20_has_0_27m_parameters():
  model = models.get_model('resnet20', num_classes=10)
  variables = jax.eval_shape(lambda: model.init(
      jax.random.PRNGKey(0), jnp.zeros((1, 32, 32, 3)), train=False))
  count = sum(int(np.prod(p.shape)) for p in jax.tree.leaves(
      variables['params']))
  convs = 3 * 3 * 3 * 16 + 6 * 9 * 16 * 16 + (9 * 16 * 32 + 5 * 9 * 32 * 32) + (
      9 * 32 * 64 + 5 * 9 * 64 * 64)
  shortcuts = 16 * 32 + 32 * 64
  bns = 2 * (16 + 3 * 2 * 16 + 3 * 2 * 32 + 32 + 3 * 2 * 64 + 64)
  assert count == convs + shortcuts + bns + 64 * 10 + 10 == 272_474
  kernels = [p for p in jax.tree_util.tree_leaves_with_path(variables['params'])
             if p[1].ndim == 4]
  assert len(kernels) == 1 + 18 + 2  # stem, 9 blocks x 2, 2 projections
