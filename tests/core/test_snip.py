"""SNIP (Lee et al. 2019), the RigL paper's Table 2 baseline: masks from the
connection sensitivity |g * w| of the first step, static afterwards."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import rigl_jax


def _snip(**kwargs):
  return rigl_jax.sparsify(optax.sgd(0.1), 'snip', distribution='uniform',
                           **kwargs)


def test_snip_hand_computed_masks():
  w = {'w': jnp.array([[0.5, -0.2, 0.1, 0.4],
                       [0.3, 0.3, -0.6, 0.05]], jnp.float32)}
  g = {'w': jnp.array([[0.1, 1.0, -2.0, 0.0],
                       [1.0, -0.1, 0.01, 10.0]], jnp.float32)}
  tx = _snip(sparsity=0.625)  # floor(0.625 * 8) = 5 zeros, 3 kept
  params, state = rigl_jax.masked_init(tx, w)
  # Dense until the first step: its gradient is the dense one.
  assert bool(rigl_jax.get_masks(state)['w'].all())
  updates, state = jax.jit(tx.update)(g, state, params)
  params = optax.apply_updates(params, updates)
  # |g * w| = [[.05, .2, .2, 0], [.3, .03, .006, .5]]: keep .5, .3, .2 (the
  # first of the two .2 by position).
  want = np.array([[False, True, False, False],
                   [True, False, False, True]])
  np.testing.assert_array_equal(np.asarray(rigl_jax.get_masks(state)['w']),
                                want)
  # That step sets the masks instead of updating the weights.
  np.testing.assert_array_equal(np.asarray(params['w']),
                                np.where(want, np.asarray(w['w']), 0.0))
  assert float(state.drop_fraction) == pytest.approx(5 / 8)


def test_snip_masks_stay_fixed_and_follow_the_distribution():
  params = {'a': {'kernel': jax.random.normal(jax.random.PRNGKey(0),
                                              (30, 20))},
            'b': {'kernel': jax.random.normal(jax.random.PRNGKey(1),
                                              (20, 10)),
                  'bias': jnp.zeros(10)}}
  tx = rigl_jax.sparsify(optax.sgd(0.1), 'snip', sparsity=0.9,
                         distribution='erk')
  assert [t for t in range(50) if tx.schedule.is_update_step(t)] == [0]
  params, state = rigl_jax.masked_init(tx, params)
  step = jax.jit(tx.update)
  masks = []
  for t in range(4):
    grads = jax.tree.map(
        lambda p, t=t: jax.random.normal(jax.random.PRNGKey(10 + t), p.shape),
        params)
    updates, state = step(grads, state, params)
    params = optax.apply_updates(params, updates)
    masks.append(rigl_jax.get_masks(state))
  sp = rigl_jax.sparsity_distribution(
      {k: {'kernel': v['kernel']} for k, v in params.items()}, 0.9, 'erk')
  for name in ('a', 'b'):
    m = np.asarray(masks[0][name]['kernel'])
    assert m.size - m.sum() == int(np.floor(sp[name]['kernel'] * m.size))
    for later in masks[1:]:
      np.testing.assert_array_equal(np.asarray(later[name]['kernel']), m)
    assert np.all(np.asarray(params[name]['kernel'])[~m] == 0)
  assert masks[0]['b']['bias'] is None
