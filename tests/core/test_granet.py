"""GraNet (Liu et al. 2021): gradual global pruning plus regeneration."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import rigl_jax
from rigl_jax.methods import granet as granet_lib
from tests import helpers


def test_hand_computed_prune_then_regenerate():
  params = {'a': jnp.array([[0.9, 0.1], [0.5, 0.2]]),
            'b': jnp.array([[0.8, 0.05], [0.3, 0.4]])}
  # SGD at lr 0: the weights stay, so the masks alone are under test. Final
  # sparsity 0.5, updates every step in [0, 4), pruning window [0, 2].
  tx = rigl_jax.granet(optax.sgd(0.0), sparsity=0.5, distribution='uniform',
                       update_freq=1, end_step=4)
  params, state = rigl_jax.masked_init(tx, params)
  assert all(bool(m.all()) for m in rigl_jax.get_masks(state).values())
  update = jax.jit(tx.update)
  zeros = jax.tree.map(jnp.zeros_like, params)
  _, state = update(zeros, state, params)  # step 0: s_0 = 0, nothing moves
  assert all(bool(m.all()) for m in rigl_jax.get_masks(state).values())
  grads = {'a': jnp.array([[0.0, 0.7], [0.1, 0.3]]),
           'b': jnp.array([[0.0, 0.2], [0.9, 0.1]])}
  updates, state = update(grads, state, params)
  # Step 1: s_1 = 0.5 - 0.5 * 0.5^3 = 0.4375 -> 3 of 8 zeros; the global
  # top 5 |w| are .9 .8 .5 .4 .3: a keeps {.9, .5}, b {.8, .3, .4}. The
  # death rate 0.005 + 0.495 * (1 + cos(pi/4)) / 2 = 0.4275 drops
  # ceil(0.855) = 1 of a (.5) and ceil(1.28) = 2 of b (.3, .4), and each
  # grows as many by |grad| outside what it kept: a position (0, 1) (.7),
  # b (1, 0) (.9, its dropped .3) and (0, 1) (.2).
  masks = rigl_jax.get_masks(state)
  np.testing.assert_array_equal(masks['a'], [[True, True], [False, False]])
  np.testing.assert_array_equal(masks['b'], [[True, True], [True, False]])
  assert float(granet_lib.death_rate(1, 4, 0.5)) == pytest.approx(
      0.005 + 0.495 * (1 + np.cos(np.pi / 4)) / 2)
  new = optax.apply_updates(params, updates)
  assert float(new['b'][1, 0]) == pytest.approx(0.3)  # dropped, regrown
  assert float(new['b'][1, 1]) == 0.0 and float(new['a'][1, 0]) == 0.0


def test_sparse_start_then_final_sparsity_with_regeneration():
  params = helpers.mlp_params(sizes=(12, 24, 16, 4))
  tx = rigl_jax.granet(optax.adam(1e-2), sparsity=0.9, distribution='erk',
                       update_freq=2, end_step=40,
                       granet_initial_sparsity=0.5)
  params, state = rigl_jax.masked_init(tx, params)

  def sparsity(state):
    ms = [np.asarray(m['kernel']) for m in rigl_jax.get_masks(state).values()]
    return 1 - sum(m.sum() for m in ms) / sum(m.size for m in ms)

  # Random ERK masks at s_i = 0.5 (exact counts).
  assert sparsity(state) == pytest.approx(0.5, abs=0.01)
  step = helpers.make_step(tx)
  seen, churn_after = [], 0.0
  for t in range(40):
    params, state = step(params, state, helpers.batch(t))
    seen.append(sparsity(state))
    if t > 20:  # after the pruning window [0, 20]: regeneration only
      churn_after += float(rigl_jax.get_sparse_state(state).mask_churn)
      assert seen[-1] == pytest.approx(seen[20])
  assert seen[20] == pytest.approx(0.9, abs=0.002)
  assert all(b >= a - 1e-9 for a, b in zip(seen, seen[1:21]))  # monotone
  assert churn_after > 0  # masks still change at the final sparsity


def test_granet_bad_arguments():
  for kw, match in (({'granet_initial_sparsity': 1.0}, 'initial_sparsity'),
                    ({'granet_prune_rate': 2.0}, 'prune_rate'),
                    ({'granet_prune_fraction': 0.0}, 'prune_fraction')):
    with pytest.raises(ValueError, match=match):
      rigl_jax.granet(optax.sgd(0.1), sparsity=0.9, end_step=10, **kw)


@pytest.mark.parametrize('method', ['srigl', 'granet', 'topkast'])
def test_in_a_train_state_with_a_chain(method):
  """As an outside user: `TrainState.apply_gradients` with `sparsify`
  wrapping a chain (clipping, Adam)."""
  train_state = pytest.importorskip('flax.training.train_state')
  params = helpers.mlp_params()
  tx = rigl_jax.sparsify(
      optax.chain(optax.clip_by_global_norm(1.0), optax.adam(1e-2)), method,
      sparsity=0.8, update_freq=3, end_step=30)
  params, opt_state = rigl_jax.masked_init(tx, params)
  state = train_state.TrainState(step=0, apply_fn=None, params=params,
                                 tx=tx, opt_state=opt_state)

  @jax.jit
  def step(state, b):
    return state.apply_gradients(
        grads=jax.grad(helpers.loss_fn)(state.params, b))

  for t in range(30):
    state = step(state, helpers.batch(t))
  masks = rigl_jax.get_masks(state.opt_state)
  for name, m in masks.items():
    m = np.asarray(m['kernel'])
    assert not np.any(np.asarray(state.params[name]['kernel'])[~m]), name
  total = sum(np.asarray(m['kernel']).size for m in masks.values())
  kept = sum(int(np.asarray(m['kernel']).sum()) for m in masks.values())
  assert 1 - kept / total == pytest.approx(0.8, abs=0.03)
