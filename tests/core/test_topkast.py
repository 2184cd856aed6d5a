"""Top-KAST (Jayakumar et al. 2020): dense weights, forward and backward
sets by magnitude, the exploration penalty."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import rigl_jax
from tests import helpers


def test_hand_computed_step_penalty_and_new_sets():
  theta = jnp.array([[0.9, -0.8, 0.5, -0.4, 0.3, 0.2, -0.1, 0.05, 0.02,
                      0.01]])
  # Forward sparsity 0.8: D = 0.2, A = the top 2 of 10; backward sparsity
  # 0.6: B = the top 4. Sets recomputed after every step.
  tx = rigl_jax.topkast(optax.sgd(1.0), sparsity=0.8,
                        distribution='uniform', update_freq=1, end_step=10,
                        topkast_backward_sparsity=0.6, topkast_penalty=0.1)
  params, state = rigl_jax.masked_init(tx, {'w': theta})
  np.testing.assert_array_equal(
      rigl_jax.get_masks(state)['w'][0], [1, 1, 0, 0, 0, 0, 0, 0, 0, 0])
  np.testing.assert_array_equal(
      state.aux.backward['w'][0], [1, 1, 1, 1, 0, 0, 0, 0, 0, 0])
  np.testing.assert_array_equal(params['w'], jnp.where(
      rigl_jax.get_masks(state)['w'], theta, 0.0))
  grads = {'w': jnp.array([[0.1, 0.1, -0.3, 0.0, 1.0, 1.0, 1.0, 1.0, 1.0,
                            1.0]])}
  updates, state = jax.jit(tx.update)(grads, state, params)
  # On B: theta - (g + 0.1 * w * theta), w = 1 on A and 1 / D = 5 on B \ A;
  # outside B nothing moves (its gradient is ignored).
  want = np.array(theta[0])
  want[0] -= 0.1 + 0.1 * 0.9
  want[1] -= 0.1 + 0.1 * -0.8
  want[2] -= -0.3 + 0.5 * 0.5
  want[3] -= 0.0 + 0.5 * -0.4
  np.testing.assert_allclose(state.aux.weights['w'][0], want, rtol=1e-6)
  # |theta'| = .71 .72 .55 .2 .3 .2 .1 ...: A' = {1, 0}, B' = {1, 0, 2, 4}.
  np.testing.assert_array_equal(
      rigl_jax.get_masks(state)['w'][0], [1, 1, 0, 0, 0, 0, 0, 0, 0, 0])
  np.testing.assert_array_equal(
      state.aux.backward['w'][0], [1, 1, 1, 0, 1, 0, 0, 0, 0, 0])
  new = optax.apply_updates(params, updates)
  np.testing.assert_allclose(new['w'][0], np.where(
      np.arange(10) < 2, want, 0.0), rtol=1e-6)
  # One more step whose gradient pushes weight 2 past weight 0: it enters A.
  grads = {'w': jnp.array([[0.7, 0.0, -0.5, 0, 0, 0, 0, 0, 0, 0]])}
  _, state = jax.jit(tx.update)(grads, state, new)
  np.testing.assert_array_equal(
      rigl_jax.get_masks(state)['w'][0], [0, 1, 1, 0, 0, 0, 0, 0, 0, 0])


@pytest.mark.parametrize('distribution', ['uniform', 'erk'])
def test_forward_set_of_d_backward_of_d_plus_m_over_many_steps(distribution):
  params = helpers.mlp_params(sizes=(12, 32, 24, 4))
  tx = rigl_jax.topkast(optax.adam(3e-2), sparsity=0.9,
                        distribution=distribution, update_freq=2,
                        end_step=60, topkast_backward_sparsity=0.7)
  params, state = rigl_jax.masked_init(tx, params)
  forward0 = helpers.nnz_tree(rigl_jax.get_masks(state))
  backward0 = helpers.nnz_tree(state.aux.backward)
  step = helpers.make_step(tx)
  churn = []
  for t in range(60):
    params, state = step(params, state, helpers.batch(t))
    masks = rigl_jax.get_masks(state)
    assert helpers.nnz_tree(masks) == forward0
    assert helpers.nnz_tree(state.aux.backward) == backward0
    for name, m in masks.items():
      a, b = np.asarray(m['kernel']), np.asarray(
          state.aux.backward[name]['kernel'])
      theta = np.asarray(state.aux.weights[name]['kernel'])
      w = np.asarray(params[name]['kernel'])
      assert not (a & ~b).any()  # A is inside B
      assert not w[~a].any()  # the model sees only A
      np.testing.assert_allclose(w[a], theta[a], rtol=1e-5, atol=1e-7)
      # A and B are the top of |theta| after the steps that recompute them
      # (steps 0, 2, 4, ...: every update_freq, after the step's update).
      if t % 2 == 0:
        order = np.sort(np.abs(theta).ravel())[::-1]
        assert np.abs(theta[a]).min() >= order[a.sum() - 1] - 1e-7
        assert np.abs(theta[b]).min() >= order[b.sum() - 1] - 1e-7
    churn.append(float(state.mask_churn))
  assert max(churn) > 0  # the forward set moved
  total = sum(v['kernel'] for v in forward0.values())
  size = sum(np.asarray(p['kernel']).size for p in params.values())
  assert 1 - total / size == pytest.approx(0.9, abs=0.01)
  back = sum(v['kernel'] for v in backward0.values())
  assert 1 - back / size == pytest.approx(0.7, abs=0.01)


def test_scanned_stack_gets_the_sets_of_the_unrolled_layers():
  key = jax.random.PRNGKey(3)
  stack = jax.random.normal(key, (3, 16, 8))
  tx_s = rigl_jax.topkast(optax.sgd(0.1), sparsity=0.75, update_freq=1,
                          end_step=10, stacked={'blocks': 0})
  tx_u = rigl_jax.topkast(optax.sgd(0.1), sparsity=0.75, update_freq=1,
                          end_step=10)
  p_s, s_s = rigl_jax.masked_init(tx_s, {'blocks': stack})
  p_u, s_u = rigl_jax.masked_init(
      tx_u, {f'block{i}': stack[i] for i in range(3)})
  for t in range(3):
    g = jax.random.normal(jax.random.fold_in(key, t), stack.shape)
    u_s, s_s = tx_s.update({'blocks': g}, s_s, p_s)
    u_u, s_u = tx_u.update({f'block{i}': g[i] for i in range(3)}, s_u, p_u)
    p_s, p_u = optax.apply_updates(p_s, u_s), optax.apply_updates(p_u, u_u)
    for i in range(3):
      np.testing.assert_array_equal(rigl_jax.get_masks(s_s)['blocks'][i],
                                    rigl_jax.get_masks(s_u)[f'block{i}'])
      np.testing.assert_array_equal(s_s.aux.backward['blocks'][i],
                                    s_u.aux.backward[f'block{i}'])
      assert int(rigl_jax.get_masks(s_s)['blocks'][i].sum()) == 32


@pytest.mark.parametrize('kwargs, match', [
    ({'sparsity': 0.5, 'topkast_backward_sparsity': 0.8},
     'must not exceed the forward sparsity'),
    ({'sparsity': 0.5, 'structure': '2:4'}, 'topkast keeps no N:M'),
    ({'sparsity': 0.9, 'topkast_penalty': -1.0}, 'topkast_penalty'),
])
def test_bad_topkast_arguments_are_one_clear_error(kwargs, match):
  with pytest.raises(ValueError, match=match):
    tx = rigl_jax.topkast(optax.sgd(0.1), end_step=10, **kwargs)
    rigl_jax.masked_init(tx, {'w': jnp.ones((8, 8))})


def test_default_backward_density_is_twice_the_forward():
  tx = rigl_jax.topkast(optax.sgd(0.1), sparsity=0.9,
                        distribution='uniform', end_step=10)
  _, state = rigl_jax.masked_init(tx, {'w': jnp.arange(100.0).reshape(10, 10)})
  assert int(rigl_jax.get_masks(state)['w'].sum()) == 10
  assert int(state.aux.backward['w'].sum()) == 20
