"""The sparse optax wrapper (rigl_jax.sparsify) on small hand-checked cases."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import rigl_jax
from rigl_jax import distributions
from rigl_jax import mask_update
from rigl_jax import masks as masks_lib
from rigl_jax import transform
from tests import helpers

DYNAMIC = ['set', 'snfs', 'rigl']


def _run(tx, steps, params=None):
  params = helpers.mlp_params() if params is None else params
  params, state = rigl_jax.masked_init(tx, params)
  step = helpers.make_step(tx)
  history = []
  for t in range(steps):
    params, state = step(params, state, helpers.batch(t))
    history.append((params, state))
  return history


def _assert_masked_zero(params, masks):
  for p, m in zip(jax.tree.leaves(params),
                  jax.tree.leaves(masks, is_leaf=lambda x: x is None)):
    if m is not None:
      assert m.dtype == jnp.bool_ and m.shape == p.shape
      assert bool(jnp.all(jnp.where(m, True, p == 0.0)))


# Every method under ERK; under uniform, static and RigL (-m slow: all).
@pytest.mark.parametrize('distribution, method', [
    pytest.param(d, m, marks=pytest.mark.slow)
    if d == 'uniform' and m in ('set', 'snfs') else (d, m)
    for d in ('uniform', 'erk') for m in ['static'] + DYNAMIC])
def test_nnz_per_layer_preserved(method, distribution):
  tx = rigl_jax.sparsify(
      optax.sgd(0.05, momentum=0.9), method, sparsity=0.8,
      distribution=distribution, update_freq=5, end_step=120,
      drop_fraction=0.5, drop_fraction_schedule='constant')
  params0 = helpers.mlp_params()
  _, state0 = rigl_jax.masked_init(tx, params0)
  masks0 = rigl_jax.get_masks(state0)
  nnz0 = helpers.nnz_tree(masks0)
  sps = rigl_jax.sparsity_distribution(params0, 0.8, distribution)
  for name in params0:
    p, s = params0[name]['kernel'], sps[name]['kernel']
    assert nnz0[name]['kernel'] == p.size - distributions.num_zeros(p.shape, s)
  assert nnz0['Dense_0']['bias'] is None
  changed = 0.0
  for params, state in _run(tx, 150):
    masks = rigl_jax.get_masks(state)
    assert helpers.nnz_tree(masks) == nnz0
    _assert_masked_zero(params, masks)
    changed = max(changed, float(state.mask_churn))
  final = rigl_jax.get_masks(state)
  differs = any(bool(jnp.any(a != b)) for a, b in
                zip(jax.tree.leaves(final), jax.tree.leaves(masks0)))
  assert differs == (method != 'static')
  assert (changed > 0.0) == (method != 'static')


@pytest.mark.parametrize('scope', ['layer', 'global'])
def test_pruning_follows_cubic_schedule(scope):
  begin, end, freq, target = 10, 70, 10, 0.9
  tx = rigl_jax.pruning(optax.sgd(0.05), sparsity=target,
                        distribution='uniform', update_freq=freq,
                        begin_step=begin, end_step=end, pruning_scope=scope)
  params0 = helpers.mlp_params()
  hist = _run(tx, 90, params0)
  sizes = [p.size for p in jax.tree.leaves(params0) if p.ndim >= 2]
  prev = None
  for t, (params, state) in enumerate(hist):
    masks = [m for m in jax.tree.leaves(rigl_jax.get_masks(state))]
    _assert_masked_zero(params, rigl_jax.get_masks(state))
    # The mask after step t reflects the last update at or before t.
    last = max([u for u in range(begin, end + 1, freq) if u <= t] +
               ([end] if t >= end else []), default=None)
    if last is None:
      assert all(int(m.sum()) == m.size for m in masks)
      continue
    s_last = target * (1 - (1 - (last - begin) / (end - begin))**3)
    if scope == 'layer':
      for m, n in zip(masks, sizes):
        assert int(m.sum()) == n - distributions.num_zeros((n,), s_last)
    else:
      total = sum(sizes)
      assert sum(int(m.sum()) for m in masks) == (
          total - distributions.num_zeros((total,), s_last))
    if prev is not None:  # pruned weights stay pruned
      for a, b in zip(prev, masks):
        assert not bool(jnp.any(b & ~a))
    prev = masks
  final = sum(int(m.sum()) for m in masks)
  assert final / sum(sizes) == pytest.approx(1 - target, abs=0.01)


def test_global_pruning_differs_from_layerwise():
  def final_masks(scope):
    tx = rigl_jax.pruning(optax.sgd(0.05), sparsity=0.8,
                          distribution='uniform', update_freq=5,
                          end_step=20, pruning_scope=scope)
    return rigl_jax.get_masks(_run(tx, 25)[-1][1])
  layer, glob = final_masks('layer'), final_masks('global')
  layer_nnz = [int(m.sum()) for m in jax.tree.leaves(layer)]
  glob_nnz = [int(m.sum()) for m in jax.tree.leaves(glob)]
  assert sum(layer_nnz) == sum(glob_nnz) or abs(
      sum(layer_nnz) - sum(glob_nnz)) <= len(layer_nnz)
  assert layer_nnz != glob_nnz


def _single_layer_update(method, w, mask, grads, drop_fraction, inner=None,
                         **kwargs):
  params = {'w': jnp.asarray(w, jnp.float32)}
  tx = rigl_jax.sparsify(
      inner or optax.sgd(0.1), method, sparsity=0.5, update_freq=1,
      end_step=10, drop_fraction=drop_fraction,
      drop_fraction_schedule='constant', init_masks={'w': jnp.asarray(mask)},
      **kwargs)
  params, state = rigl_jax.masked_init(tx, params)
  updates, state = jax.jit(tx.update)({'w': jnp.asarray(grads, jnp.float32)},
                                      state, params)
  return optax.apply_updates(params, updates), state


def test_rigl_hand_computed_update():
  w = [[0.5, 0.0, -0.1, 0.0],
       [0.0, 2.0, 0.0, 0.3]]
  mask = [[True, False, True, False],
          [False, True, False, True]]
  g = [[0.0, 0.9, 0.05, -0.2],
       [0.7, 0.1, -0.8, 0.6]]
  params, state = _single_layer_update('rigl', w, mask, g, 0.5)
  # nnz = 4, k = floor(0.5 * 4) = 2: drop |-0.1| and |0.3|; grow the two
  # largest |g| among the positions not kept: 0.9 at (0, 1), -0.8 at (1, 2).
  want_mask = [[True, True, False, False],
               [False, True, True, False]]
  np.testing.assert_array_equal(np.asarray(rigl_jax.get_masks(state)['w']),
                                want_mask)
  # The weight update is skipped; grown weights are 0, dropped weights are 0.
  np.testing.assert_array_equal(
      np.asarray(params['w']),
      np.array([[0.5, 0.0, 0.0, 0.0], [0.0, 2.0, 0.0, 0.0]], np.float32))
  assert float(state.mask_churn) == 0.5
  assert float(state.drop_fraction) == pytest.approx(0.5)


@pytest.mark.parametrize('method,want_mask,want_w', [
    # RigL (Algorithm 1): the mask update replaces the step. Drop the
    # smallest |w| before the step, |-0.1|; grow the largest |g|, 0.9.
    ('rigl', [[True, True, False, True]], [[0.5, 0.3, 0.0, 0.0]]),
    # SET and SNFS (google-research/rigl sparse_optimizers_base.py:133-146):
    # the SGD step first (w - 1.0 * g), then the mask update on the stepped
    # weights: 0.3 - 0.25 = 0.05 is now the smallest and is dropped.
    # SNFS grows the largest |momentum| = 0.1 * |g| among {1, 3}: 3.
    ('snfs', [[True, False, True, True]], [[0.4, 0.0, -0.1, 0.0]]),
])
def test_which_methods_apply_the_weight_update_on_mask_updates(
    method, want_mask, want_w):
  w = [[0.5, 0.3, -0.1, 0.0]]
  mask = [[True, True, True, False]]
  g = [[0.1, 0.25, 0.0, 0.9]]
  params, state = _single_layer_update(method, w, mask, g, 0.34,
                                       inner=optax.sgd(1.0))
  np.testing.assert_array_equal(np.asarray(rigl_jax.get_masks(state)['w']),
                                want_mask)
  np.testing.assert_allclose(np.asarray(params['w']), want_w, rtol=1e-6)


def test_set_applies_the_weight_update_then_drops_on_the_stepped_weights():
  params, state = _single_layer_update(
      'set', [[0.5, 0.3, -0.1, 0.0]], [[True, True, True, False]],
      [[0.1, 0.25, 0.0, 0.9]], 0.34, inner=optax.sgd(1.0))
  mask, w = np.asarray(rigl_jax.get_masks(state)['w']), np.asarray(params['w'])
  # The step applied (0.5 - 0.1); the stepped 0.05 dropped, -0.1 kept.
  assert mask[0, 0] and mask[0, 2] and mask.sum() == 3
  np.testing.assert_allclose(w[0, [0, 2]], [0.4, -0.1], rtol=1e-6)
  # One random regrowth among {1, 3}: a regrown 1 keeps its stepped value
  # (as in the reference, which reinitialises only new connections), 3
  # starts at 0.
  np.testing.assert_allclose(w[0, 1], 0.05 if mask[0, 1] else 0.0, rtol=1e-5)
  assert w[0, 3] == 0.0


def test_rigl_regrow_of_a_dropped_position_keeps_its_weight():
  # The dropped (0, 2) has the largest gradient: it is grown straight back and
  # keeps its value (as in the reference code), so only one slot changes.
  w = [[0.5, -0.1, 0.0, 0.0]]
  mask = [[True, True, False, False]]
  g = [[0.0, 5.0, 1.0, 0.0]]
  params, state = _single_layer_update('rigl', w, mask, g, 0.5)
  np.testing.assert_array_equal(np.asarray(rigl_jax.get_masks(state)['w']),
                                [[True, True, False, False]])
  np.testing.assert_array_equal(np.asarray(params['w']),
                                np.array([[0.5, -0.1, 0, 0]], np.float32))
  assert float(state.mask_churn) == 0.0


def test_snfs_grows_by_gradient_momentum():
  w = [[0.5, 0.0, -0.1, 0.0, 0.0, 0.0]]
  mask = [[True, False, True, False, False, False]]
  g = [[0.0, 0.3, 0.0, -0.9, 0.2, 0.0]]
  params, state = _single_layer_update('snfs', w, mask, g, 0.5,
                                       snfs_momentum=0.5)
  # EMA after one step = 0.5 * g; grow the largest |EMA| among not kept.
  np.testing.assert_allclose(np.asarray(state.aux['w']), 0.5 * np.array(g))
  np.testing.assert_array_equal(np.asarray(rigl_jax.get_masks(state)['w']),
                                [[True, False, False, True, False, False]])


def test_set_grows_randomly_and_deterministically_from_seed():
  w = np.zeros((1, 40), np.float32)
  w[0, :10] = np.arange(1, 11)
  mask = w != 0
  g = np.zeros_like(w)
  results = [rigl_jax.get_masks(
      _single_layer_update('set', w, mask, g, 0.5, seed=s)[1])['w']
             for s in (0, 0, 1)]
  np.testing.assert_array_equal(np.asarray(results[0]), np.asarray(results[1]))
  assert bool(jnp.any(results[0] != results[2]))
  for r in results:
    # The 5 largest weights are kept; 5 connections are grown at random
    # among the other 35 positions (dropped ones included).
    r = np.asarray(r)
    assert r.sum() == 10 and r[0, 5:10].all()
  assert any(np.asarray(r)[0, 10:].any() for r in results)


# Each method and each optimizer once in the default suite; all four pairs
# under -m slow.
@pytest.mark.parametrize('inner_name, method', [
    ('sgd_momentum', 'set'), ('adam', 'rigl'),
    pytest.param('adam', 'set', marks=pytest.mark.slow),
    pytest.param('sgd_momentum', 'rigl', marks=pytest.mark.slow)])
def test_grown_weights_are_zero_and_optimizer_state_reset(inner_name, method):
  inner = (optax.sgd(0.05, momentum=0.9) if inner_name == 'sgd_momentum'
           else optax.adam(1e-2))
  tx = rigl_jax.sparsify(inner, method, sparsity=0.7, update_freq=10,
                         end_step=100, drop_fraction=0.5, begin_step=10,
                         drop_fraction_schedule='constant')
  params, state = rigl_jax.masked_init(tx, helpers.mlp_params())
  step = helpers.make_step(tx)
  # Two mask updates (steps 10 and 20): connections dropped at 10 and
  # regrown at 20 must not bring back the momentum they had.
  for t in range(20):
    params, state = step(params, state, helpers.batch(t))
  before_masks = rigl_jax.get_masks(state)
  before_inner = state.inner_state
  params, state = step(params, state, helpers.batch(20))  # mask update
  after_masks = rigl_jax.get_masks(state)
  before_k = before_masks['Dense_1']['kernel']
  after_k = after_masks['Dense_1']['kernel']
  grown = after_k & ~before_k
  changed = after_k != before_k
  assert int(grown.sum()) > 0
  assert bool(jnp.all(jnp.where(grown, params['Dense_1']['kernel'] == 0,
                                True)))
  # Every inner-state leaf that mirrors the params restarts at 0 where the
  # mask changed (grown and dropped), and so is 0 at every inactive
  # position. Elsewhere RigL holds it (the step is replaced); SET advances
  # it (the step is applied before the mask update).
  mirrors = [
      (b, a) for b, a in zip(jax.tree.leaves(before_inner),
                             jax.tree.leaves(state.inner_state))
      if b.shape == grown.shape]
  assert len(mirrors) == (1 if inner_name == 'sgd_momentum' else 2)
  for b, a in mirrors:
    assert bool(jnp.all(jnp.where(changed, a == 0, True)))
    kept = after_k & ~changed
    if method == 'rigl':
      assert bool(jnp.all(jnp.where(kept, a == b, True)))
    else:
      assert bool(jnp.any(jnp.where(kept, a != b, False)))
    assert bool(jnp.all(jnp.where(after_k, True, a == 0)))
    assert bool(jnp.any(jnp.where(after_k & ~changed, a != 0, False)))


def test_dense_leaves_untouched():
  inner = optax.sgd(0.05, momentum=0.9)
  tx = rigl_jax.rigl(inner, sparsity=0.8, update_freq=3, end_step=100)
  params, state = rigl_jax.masked_init(tx, helpers.mlp_params())
  dense_state = inner.init(params)
  step = helpers.make_step(tx)
  for t in range(7):
    grads = jax.grad(helpers.loss_fn)(params, helpers.batch(t))
    dense_updates, new_dense_state = inner.update(grads, dense_state, params)
    new_params, state = step(params, state, helpers.batch(t))
    for name in params:
      got = new_params[name]['bias'] - params[name]['bias']
      if t % 3 == 0:  # RigL's mask-update step replaces the weight update
        np.testing.assert_array_equal(np.asarray(got), 0.0)
      else:
        np.testing.assert_allclose(np.asarray(got),
                                   np.asarray(dense_updates[name]['bias']),
                                   rtol=1e-6, atol=1e-7)
        dense_state = new_dense_state
    params = new_params
  assert rigl_jax.get_masks(state)['Dense_0']['bias'] is None


def test_dense_method_equals_inner_optimizer():
  inner = optax.adam(1e-2)
  tx = rigl_jax.dense(inner)
  p_sparse, s_sparse = rigl_jax.masked_init(tx, helpers.mlp_params())
  p_ref, s_ref = helpers.mlp_params(), inner.init(helpers.mlp_params())
  step_sparse, step_ref = helpers.make_step(tx), helpers.make_step(inner)
  for t in range(5):
    p_sparse, s_sparse = step_sparse(p_sparse, s_sparse, helpers.batch(t))
    p_ref, s_ref = step_ref(p_ref, s_ref, helpers.batch(t))
  for a, b in zip(jax.tree.leaves(p_sparse), jax.tree.leaves(p_ref)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  assert all(m is None for m in jax.tree.leaves(
      rigl_jax.get_masks(s_sparse), is_leaf=lambda x: x is None))


def test_snfs_redistribution_keeps_total_nnz():
  tx = rigl_jax.snfs(optax.sgd(0.05, momentum=0.9), sparsity=0.8,
                     distribution='uniform', update_freq=5, end_step=200,
                     drop_fraction=0.5, drop_fraction_schedule='constant',
                     snfs_redistribution=True)
  params0 = helpers.mlp_params()
  _, s0 = rigl_jax.masked_init(tx, params0)
  nnz0 = [int(m.sum()) for m in jax.tree.leaves(rigl_jax.get_masks(s0))]
  hist = _run(tx, 60, params0)
  per_layer = []
  for params, state in hist:
    masks = rigl_jax.get_masks(state)
    _assert_masked_zero(params, masks)
    nnz = [int(m.sum()) for m in jax.tree.leaves(masks)]
    assert sum(nnz) == sum(nnz0)
    per_layer.append(nnz)
  assert per_layer[-1] != nnz0  # the layers' shares moved


def test_redistribute_counts_exact():
  from rigl_jax.methods.snfs import redistribute_counts
  counts = redistribute_counts(jnp.int32(100), jnp.array([1.0, 1.0, 2.0]),
                               jnp.array([10, 200, 200], jnp.int32))
  c = np.asarray(counts)
  assert c.sum() == 100 and (c <= [10, 200, 200]).all() and c[0] == 10
  assert abs(c[2] - 2 * c[1]) <= 2


def test_composes_with_optax_chain():
  inner = optax.chain(optax.clip_by_global_norm(1.0),
                      optax.add_decayed_weights(1e-3), optax.sgd(0.1, 0.9))
  tx = optax.chain(optax.clip(5.0),
                   rigl_jax.rigl(inner, sparsity=0.75, update_freq=4,
                                 end_step=100))
  params, state = rigl_jax.masked_init(tx, helpers.mlp_params())
  nnz0 = helpers.nnz_tree(rigl_jax.get_masks(state))
  step = helpers.make_step(tx)
  losses = []
  for t in range(40):
    params, state = step(params, state, helpers.batch(t))
    masks = rigl_jax.get_masks(state)
    assert helpers.nnz_tree(masks) == nnz0
    _assert_masked_zero(params, masks)
    losses.append(float(helpers.loss_fn(params, helpers.batch(0))))
  assert losses[-1] < losses[0]
  assert rigl_jax.get_sparse_state(state).step == 40


def test_flax_nnx_optimizer():
  nnx = pytest.importorskip('flax.nnx')

  class MLP(nnx.Module):

    def __init__(self, rngs):
      self.l1 = nnx.Linear(12, 24, rngs=rngs)
      self.l2 = nnx.Linear(24, 4, rngs=rngs)

    def __call__(self, x):
      return self.l2(jax.nn.relu(self.l1(x)))

  model = MLP(nnx.Rngs(0))
  tx = rigl_jax.rigl(optax.sgd(0.1, momentum=0.9), sparsity=0.8,
                     update_freq=5, end_step=100, drop_fraction=0.5,
                     drop_fraction_schedule='constant')
  optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)
  masks0 = rigl_jax.get_masks(optimizer.opt_state)
  # The one call that masks the model after init.
  nnx.update(model, rigl_jax.apply_masks(nnx.state(model, nnx.Param), masks0))
  nnz0 = int(masks0['l1']['kernel'].sum())

  @nnx.jit
  def train_step(model, optimizer, x, y):
    def loss(model):
      return optax.softmax_cross_entropy_with_integer_labels(model(x), y).mean()
    grads = nnx.grad(loss)(model)
    optimizer.update(model, grads)

  for t in range(23):
    x, y = helpers.batch(t)
    train_step(model, optimizer, x, y)
  masks = rigl_jax.get_masks(optimizer.opt_state)
  kernel = model.l1.kernel[...]
  assert int(masks['l1']['kernel'].sum()) == nnz0
  assert bool(jnp.any(masks['l1']['kernel'] != masks0['l1']['kernel']))
  assert bool(jnp.all(jnp.where(masks['l1']['kernel'], True, kernel == 0)))
  assert masks['l1']['bias'] is None


def test_init_masks_are_used():
  params = helpers.mlp_params()
  init = jax.tree.map(lambda p: (jnp.arange(p.size).reshape(p.shape) % 3 == 0)
                      if p.ndim == 2 else None, params)
  tx = rigl_jax.static(optax.sgd(0.1), sparsity=0.5, init_masks=init)
  _, state = rigl_jax.masked_init(tx, params)
  for a, b in zip(jax.tree.leaves(rigl_jax.get_masks(state)),
                  jax.tree.leaves(init)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_from_config_matches_sparsify():
  ml_collections = pytest.importorskip('ml_collections')
  cfg = ml_collections.ConfigDict(dict(
      method='rigl', sparsity=0.8, distribution='uniform', update_freq=5,
      end_step=50, drop_fraction=0.4, drop_fraction_schedule='constant',
      seed=3))
  tx1 = rigl_jax.from_config(optax.sgd(0.1), cfg)
  tx2 = rigl_jax.sparsify(optax.sgd(0.1), 'rigl', sparsity=0.8,
                          distribution='uniform', update_freq=5, end_step=50,
                          drop_fraction=0.4, drop_fraction_schedule='constant',
                          seed=3)
  h1, h2 = _run(tx1, 12), _run(tx2, 12)
  for a, b in zip(jax.tree.leaves(h1[-1]), jax.tree.leaves(h2[-1])):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_update_is_jittable_with_donation():
  tx = rigl_jax.rigl(optax.sgd(0.1), sparsity=0.9, end_step=10, update_freq=2)
  params, state = rigl_jax.masked_init(tx, helpers.mlp_params())

  def text(mask_update):
    def step(p, s, b):
      g = jax.grad(helpers.loss_fn)(p, b)
      u, s = tx.update(g, s, p, mask_update=mask_update)
      return optax.apply_updates(p, u), s
    return jax.jit(step, donate_argnums=(0, 1)).lower(
        params, state, helpers.batch(0)).as_text()

  # No host round-trips in an ordinary step; the one callback of the other
  # programs reports masked weights that a chain made nonzero, and sits in
  # the mask update (inside its conditional in the single program).
  assert 'callback' not in text(False)
  assert text(True).count('callback(') == 1
  cond = text(None)
  assert cond.count('callback(') == 1
  assert cond.index('stablehlo.case') < cond.index('callback(')


@pytest.mark.skipif(not os.environ.get('JAX_COMPILATION_CACHE_DIR'),
                    reason='the suite runs without a compilation cache')
def test_without_the_leak_check_the_step_is_persistently_cached():
  # JAX never writes a program that holds a host callback to its
  # persistent compilation cache: the leak check kept every sparse step out
  # of it, and a restarted job compiled the mask update again. Without the
  # check the same step trains the same, and is cached.
  cache = os.environ['JAX_COMPILATION_CACHE_DIR']
  final = {}
  for check in (True, False):
    tx = rigl_jax.rigl(optax.sgd(0.1, momentum=0.9), sparsity=0.8,
                       end_step=10, update_freq=2, check_leaks=check)
    params, state = rigl_jax.masked_init(tx, helpers.mlp_params())

    def step(p, s, b, tx=tx):
      u, s = tx.update(jax.grad(helpers.loss_fn)(p, b), s, p)
      return optax.apply_updates(p, u), s

    step.__name__ = f'rigl_step_check_{check}_{os.getpid()}'
    compiled = jax.jit(step).lower(params, state, helpers.batch(0)).compile()
    cached = [f for f in os.listdir(cache)
              if f.startswith(f'jit_{step.__name__}-')]
    assert len(cached) == (0 if check else 1), cached
    for t in range(5):  # mask updates at steps 0, 2 and 4
      params, state = compiled(params, state, helpers.batch(t))
    final[check] = (params, state)
  assert float(final[False][1].mask_churn) > 0
  for a, b in zip(jax.tree.leaves(final[True]),
                  jax.tree.leaves(final[False])):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


@pytest.mark.parametrize('method', ['static'] + DYNAMIC + ['pruning'])
def test_the_users_step_has_no_effects(method):
  # An effect anywhere in the program (a jax.debug.callback, even inside a
  # branch that never runs) turns off jit's C++ dispatch: every call of the
  # README's step then went through Python (~0.9 ms a step on a 4-layer
  # MLP). The old leak check was such a callback.
  tx = rigl_jax.sparsify(optax.sgd(0.1), method, sparsity=0.9, end_step=10,
                         update_freq=2)
  params, state = rigl_jax.masked_init(tx, helpers.mlp_params())

  def step(p, s, b):
    u, s = tx.update(jax.grad(helpers.loss_fn)(p, b), s, p)
    return optax.apply_updates(p, u), s

  assert not jax.make_jaxpr(step)(params, state, helpers.batch(0)).effects


@pytest.mark.parametrize('inner,init', [
    ('scheduled_sgd', 'masked_init'), ('momentum', 'masked_init'),
    ('sgd', 'init_committed'), ('momentum', 'init_uncommitted')])
def test_the_users_step_compiles_once(inner, init):
  # The init programs read no parameter values (the masks are random draws,
  # the inner state zeros shaped like the params): they returned an
  # uncommitted state beside committed params, the step's outputs are all
  # committed, so the user's jitted step compiled again at its second call.
  make = {'sgd': lambda: optax.sgd(0.1),
          'scheduled_sgd': lambda: optax.inject_hyperparams(optax.sgd)(
              learning_rate=optax.linear_schedule(0.1, 0.0, 50)),
          'momentum': lambda: optax.sgd(0.1, momentum=0.9)}[inner]
  tx = rigl_jax.rigl(make(), sparsity=0.5, end_step=10, update_freq=2)
  params = helpers.mlp_params()
  if init == 'masked_init':
    params, state = rigl_jax.masked_init(tx, params)
  else:
    if init == 'init_committed':
      params = jax.device_put(params, jax.devices()[0])
    params = jax.tree.map(jnp.copy, params)  # as an init program returns
    state = tx.init(params)
  step = helpers.make_step(tx)
  for t in range(3):
    params, state = step(params, state, helpers.batch(t))
  assert step._cache_size() == 1  # pylint: disable=protected-access


@pytest.mark.parametrize('method', ['rigl', 'set'])
def test_an_unjitted_loop_traces_the_update_once(method):
  # Called outside jit (a plain loop, a debugging session), the update ran
  # op by op: its lax.cond and search loops were traced, lowered and
  # compiled again on every call (seconds a step for this MLP).
  tx = rigl_jax.sparsify(optax.sgd(0.1, momentum=0.9), method, sparsity=0.5,
                         end_step=100, update_freq=2)
  params, state = rigl_jax.masked_init(tx, helpers.mlp_params())
  reference = (params, state)
  lowered = []

  def listen(event, duration, **kwargs):
    del duration, kwargs
    if event == '/jax/core/compile/jaxpr_to_mlir_module_duration':
      lowered.append(event)

  grad_fn = jax.jit(jax.grad(helpers.loss_fn))
  apply_fn = jax.jit(optax.apply_updates)
  jax.monitoring.register_event_duration_secs_listener(listen)
  try:
    for t in range(6):
      if t == 2:  # a plain step and a mask update have run once
        lowered.clear()
      grads = grad_fn(params, helpers.batch(t))
      updates, state = tx.update(grads, state, params)
      params = apply_fn(params, updates)
  finally:
    jax.monitoring.unregister_event_duration_listener(listen)
  assert not lowered, f'{len(lowered)} programs lowered in steps 2-5'
  # The same training as the user's jitted step.
  step = helpers.make_step(tx)
  p, s = reference
  for t in range(6):
    p, s = step(p, s, helpers.batch(t))
  for a, b in zip(jax.tree.leaves((params, rigl_jax.get_masks(state))),
                  jax.tree.leaves((p, rigl_jax.get_masks(s)))):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6,
                               atol=1e-7)


BAD = [
    (dict(method='lottery', sparsity=0.5, end_step=10), "valid choices are"),
    (dict(method='rigl', sparsity=1.0, end_step=10), r'\[0, 1\)'),
    (dict(method='rigl', sparsity=-0.2, end_step=10), r'\[0, 1\)'),
    (dict(method='rigl', sparsity=0.5, end_step=10, distribution='normal'),
     'valid choices are'),
    (dict(method='rigl', sparsity=0.5, end_step=10,
          drop_fraction_schedule='linear'), 'valid choices are'),
    (dict(method='rigl', sparsity=0.5, end_step=10, begin_step=10),
     'end_step must be'),
    (dict(method='rigl', sparsity=0.5, end_step=5, begin_step=10),
     'end_step must be'),
    (dict(method='rigl', sparsity=0.5), 'end_step is required'),
    (dict(method='set', sparsity=0.5, end_step=10, update_freq=0),
     'update_freq must be'),
    (dict(method='pruning', sparsity=0.5, end_step=10, pruning_scope='net'),
     'valid choices are'),
    (dict(method='rigl', sparsity=0.5, end_step=10, check_leaks='no'),
     'check_leaks must be True or False'),
    (dict(method='rigl', sparsity=0.5, end_step=10, update_frequency=3),
     r"unknown sparsify argument\(s\) \['update_frequency'\] \(did you "
     r"mean 'update_freq' for 'update_frequency'\?\); valid ones are "
     r"sparsify's \[.*'update_freq'.*\] and the methods' \[.*'snfs_momentum'"),
]


@pytest.mark.parametrize('kwargs, match', [
    (dict(sparsty=0.9, end_step=10), r"\(did you mean 'sparsity' for "
     r"'sparsty'\?\)"),
    (dict(sparsity=0.9, end_step=10, updte_freq=5, colour=1),
     r"\['colour', 'updte_freq'\] \(did you mean 'update_freq' for "
     r"'updte_freq'\?\)"),
])
def test_constructor_names_a_misspelt_argument(kwargs, match):
  # rigl_jax.rigl(...) with a typo in a sparsify argument used to fail with
  # Python's "missing 1 required keyword-only argument: 'sparsity'" (or a
  # list of method hyperparameters only, without update_freq).
  with pytest.raises(ValueError, match=match):
    rigl_jax.rigl(optax.sgd(0.1), **kwargs)


def test_from_config_names_a_misspelt_field():
  with pytest.raises(ValueError, match=r"unknown sparsity config field\(s\) "
                     r"\['update_frequency'\] \(did you mean 'update_freq' "
                     r"for 'update_frequency'\?\); valid fields are"):
    rigl_jax.from_config(optax.sgd(0.1), dict(
        method='rigl', sparsity=0.9, end_step=10, update_frequency=3))


@pytest.mark.parametrize('kwargs, match', BAD)
def test_bad_arguments(kwargs, match):
  kwargs = dict(kwargs)
  method = kwargs.pop('method')
  with pytest.raises(ValueError, match=match):
    rigl_jax.sparsify(optax.sgd(0.1), method, **kwargs)


@pytest.mark.parametrize('init_masks, match', [
    ({'Dense_0': {'kernel': jnp.ones((12, 24), bool)}}, 'tree structure'),
    (lambda p: jax.tree.map(lambda x: jnp.ones(x.shape[::-1], bool)
                            if x.ndim == 2 else None, p), 'has shape'),
])
def test_bad_init_masks(init_masks, match):
  params = helpers.mlp_params()
  if callable(init_masks):
    init_masks = init_masks(params)
  tx = rigl_jax.rigl(optax.sgd(0.1), sparsity=0.5, end_step=10,
                     init_masks=init_masks)
  with pytest.raises(ValueError, match=match):
    tx.init(params)


def test_bad_custom_sparsity_and_config_fields():
  tx = rigl_jax.rigl(optax.sgd(0.1), sparsity=0.5, end_step=10,
                     custom_sparsity={'Dense_9/kernel': 0.1})
  with pytest.raises(ValueError, match='matches no sparse leaf'):
    tx.init(helpers.mlp_params())
  with pytest.raises(ValueError, match='valid fields'):
    rigl_jax.from_config(optax.sgd(0.1),
                         dict(method='rigl', sparsity=0.5, sparsty=0.9))
  tx = rigl_jax.rigl(optax.sgd(0.1), sparsity=0.5, end_step=10)
  state = tx.init(helpers.mlp_params())
  with pytest.raises(ValueError, match='needs params'):
    tx.update(helpers.mlp_params(), state)


# RigL in the default suite (the other methods share the code path).
@pytest.mark.parametrize('method', [
    pytest.param('set', marks=pytest.mark.slow),
    pytest.param('snfs', marks=pytest.mark.slow), 'rigl',
    pytest.param('pruning', marks=pytest.mark.slow)])
def test_host_chosen_mask_update_equals_the_cond_program(method):
  # train.py compiles a plain step and a mask-update step and picks one on
  # the host; both must give what the single lax.cond program gives (the
  # same masks; floats up to rounding, as XLA fuses them differently).
  params = helpers.mlp_params()
  tx = rigl_jax.sparsify(optax.sgd(0.1, momentum=0.9), method, sparsity=0.8,
                         update_freq=3, begin_step=1, end_step=10)
  schedule = lambda t: bool(rigl_jax.schedules.is_update_step(
      t, update_freq=3, begin_step=1, end_step=10,
      include_end=method == 'pruning'))

  def make(mask_update):
    @jax.jit
    def step(p, s, b):
      g = jax.grad(helpers.loss_fn)(p, b)
      u, s = tx.update(g, s, p, mask_update=mask_update)
      return optax.apply_updates(p, u), s
    return step

  steps = {None: make(None), True: make(True), False: make(False)}
  p1, s1 = rigl_jax.masked_init(tx, params)
  p2, s2 = p1, s1
  changed = 0
  for t in range(12):
    b = helpers.batch(t)
    p1, s1 = steps[None](p1, s1, b)
    old = rigl_jax.get_masks(s2)
    p2, s2 = steps[schedule(t)](p2, s2, b)
    changed += any(bool(jnp.any(a != c)) for a, c in zip(
        jax.tree.leaves(old), jax.tree.leaves(rigl_jax.get_masks(s2))))
    for a, c in zip(jax.tree.leaves((p1, s1)), jax.tree.leaves((p2, s2))):
      if a.dtype == jnp.bool_:  # masks: identical
        np.testing.assert_array_equal(np.asarray(a), np.asarray(c))
      else:  # other fusions: float rounding only
        np.testing.assert_allclose(np.asarray(a), np.asarray(c), rtol=1e-5,
                                   atol=1e-7)
  assert changed >= 3
  with pytest.raises(ValueError, match='mask_update must be'):
    tx.update(params, s1, params, mask_update=jnp.asarray(True))


def test_masked_init_compile_options_do_not_change_masks(monkeypatch):
  """The CPU compile options of the init program change speed, not masks;
  an XLA without them falls back to its defaults."""
  params = helpers.mlp_params()
  make = lambda: rigl_jax.rigl(optax.sgd(0.1), sparsity=0.8, end_step=100)
  tuned = rigl_jax.masked_init(make(), params)
  monkeypatch.setattr(transform, '_CPU_INIT_OPTIONS', {})
  plain = rigl_jax.masked_init(make(), params)
  monkeypatch.setattr(transform, '_CPU_INIT_OPTIONS',
                      {'xla_no_such_option_here': True})
  fallback = rigl_jax.masked_init(make(), params)
  for a, b, c in zip(*map(jax.tree.leaves, (tuned, plain, fallback))):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    np.testing.assert_array_equal(np.asarray(a), np.asarray(c))


def test_masked_init_inside_the_callers_jit():
  params = helpers.mlp_params()
  tx = rigl_jax.rigl(optax.sgd(0.1), sparsity=0.8, end_step=100)
  eager = rigl_jax.masked_init(tx, params)
  jitted = jax.jit(lambda p: rigl_jax.masked_init(tx, p))(params)
  for a, b in zip(jax.tree.leaves(eager), jax.tree.leaves(jitted)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


@pytest.mark.parametrize('method,inner', [
    ('rigl', optax.sgd(0.1, momentum=0.9)), ('snfs', optax.adam(1e-3)),
    ('set', optax.chain(optax.clip(1.0), optax.sgd(0.1))),
    ('static', optax.adamw(1e-3))])
def test_masked_init_on_one_cpu_device_equals_the_one_program_path(
    monkeypatch, method, inner):
  """On one CPU device `masked_init` slices the drawn masks on the host
  (no kernel per leaf); under the caller's jit it is one program. Same
  params, masks, inner state and aux, bit for bit."""
  keys = jax.random.split(jax.random.PRNGKey(3), 4)
  params = {'conv': {'kernel': jax.random.normal(keys[0], (3, 3, 4, 8)),
                     'bias': jnp.ones(8)},
            'dense': {'kernel': jax.random.normal(keys[1], (72, 1030)),
                      'bias': None},
            'head': {'kernel': jax.random.normal(keys[2], (1030, 10),
                                                 jnp.bfloat16)}}
  tx = rigl_jax.sparsify(inner, method, sparsity=0.8, distribution='erk',
                         end_step=100)
  seen = []
  split = masks_lib.split_selection
  monkeypatch.setattr(masks_lib, 'split_selection',
                      lambda sel, shapes: seen.append(type(sel)) or split(
                          sel, shapes))
  own_key = keys[3]
  for key in (None, own_key):
    seen.clear()
    host = rigl_jax.masked_init(tx, params, key=key)
    assert seen == [np.ndarray]  # the host path was taken
    program = jax.jit(lambda p, k: rigl_jax.masked_init(tx, p, key=k))(
        params, key)
    assert jax.tree.structure(host) == jax.tree.structure(program)
    for a, b in zip(jax.tree.leaves(host), jax.tree.leaves(program)):
      assert a.dtype == b.dtype and a.shape == b.shape
      np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  # New buffers, as the program's outputs: the caller may donate the masked
  # params and the state and keep using its own arrays and key.
  ptr = lambda x: x.unsafe_buffer_pointer()  # pylint: disable=unnecessary-lambda-assignment
  assert ptr(host[0]['conv']['bias']) != ptr(params['conv']['bias'])
  assert ptr(host[1].key) != ptr(own_key)


def test_drop_count_is_the_reference_float32_truncation():
  """`n_prune` of google-research/rigl (sparse_optimizers_base.py:287-289)
  on 160,000 (nnz, cosine drop fraction) pairs: int(float32(nnz) * f)."""
  steps = jnp.arange(0, 8000, 100)
  fractions = jax.vmap(lambda t: rigl_jax.drop_fraction(
      t, initial=0.3, schedule='cosine', begin_step=0, end_step=8000))(steps)
  nnz = jnp.arange(1, 2001, dtype=jnp.int32)
  got = jax.vmap(lambda f: mask_update.drop_count(f, nnz))(fractions)
  f32 = np.asarray(fractions, np.float32)[:, None]
  want = np.floor(f32 * np.arange(1, 2001, dtype=np.float32)[None, :])
  np.testing.assert_array_equal(np.asarray(got), want.astype(np.int32))
