"""The official code's options: grow_init, drop-score noise, rigl_acc_scale.

google-research/rigl rigl/sparse_optimizers_base.py: `get_grow_tensor`
(355-399, RigL's 540-553), `generic_mask_update`'s ``noise_std`` (260-270),
`reset_momentum` with ``initial_acc_scale`` (555-564).
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import rigl_jax
from rigl_jax.methods import base

SHAPE = (64, 48)


def _one_update(method, params, grads, inner=None, **kwargs):
  """masked_init, then one step that is a mask update; returns
  ``(old_mask, new_mask, new_params, state)``."""
  tx = rigl_jax.sparsify(inner or optax.sgd(0.1), method, sparsity=0.8,
                         distribution='uniform', update_freq=1, end_step=10,
                         drop_fraction=0.3, drop_fraction_schedule='constant',
                         **kwargs)
  params, state = rigl_jax.masked_init(tx, params)
  old = np.asarray(rigl_jax.get_masks(state)['w'])
  updates, new_state = jax.jit(tx.update)(grads, state, params)
  new_params = optax.apply_updates(params, updates)
  return (old, np.asarray(rigl_jax.get_masks(new_state)['w']),
          new_params, new_state)


def _tree(seed, scale=1.0):
  return {'w': scale * jax.random.normal(jax.random.PRNGKey(seed), SHAPE)}


@pytest.mark.parametrize('method', ['set', 'snfs', 'rigl'])
def test_zeros_is_the_default_grow_init(method):
  old, new, params, _ = _one_update(method, _tree(0), _tree(1))
  grown = new & ~old
  assert grown.sum() > 0
  np.testing.assert_array_equal(np.asarray(params['w'])[grown], 0.0)


def test_rigl_gradient_grow_inits_take_the_dense_gradient():
  grads = _tree(1)
  g = np.asarray(grads['w'])
  for name, want in (('grad_scale', g), ('grad_scale_4', g / 4),
                     ('grad_sign', np.sign(g)), ('grad_sign_2', np.sign(g) / 2)):
    old, new, params, _ = _one_update('rigl', _tree(0), grads, grow_init=name)
    grown = new & ~old
    assert grown.sum() > 0
    np.testing.assert_allclose(np.asarray(params['w'])[grown], want[grown],
                               rtol=1e-6)
    # Weights that were active and stay active: untouched (RigL replaces the
    # step by the mask update).
    kept = new & old
    np.testing.assert_array_equal(np.asarray(params['w'])[kept],
                                  np.asarray(
                                      rigl_jax.apply_masks(_tree(0), {
                                          'w': jnp.asarray(old)})['w'])[kept])


@pytest.mark.parametrize('method', ['set', 'rigl'])
def test_random_grow_inits_follow_the_active_weights_statistics(method):
  # A tiny learning rate: SET's statistics are those of the weights after
  # the step, which then stay those of `params`.
  params, sgd = _tree(0, scale=0.05), optax.sgd(1e-6)
  old, new, out, _ = _one_update(method, params, _tree(1), inner=sgd,
                                 grow_init='random_normal')
  grown = new & ~old
  w = np.asarray(params['w'])[old]
  values = np.asarray(out['w'])[grown]
  assert grown.sum() > 100 and np.all(values != 0)
  # N(0, std of the active weights): the sample std within 25%.
  assert 0.75 * w.std() < values.std() < 1.25 * w.std()

  _, _, out_u, _ = _one_update(method, params, _tree(1), inner=sgd,
                               grow_init='random_uniform')
  v = np.asarray(out_u['w'])[grown]
  bound = np.abs(w).mean()
  assert np.all(np.abs(v) <= bound * (1 + 1e-4))
  assert np.abs(v).max() > 0.8 * bound
  # A '_K' suffix divides the same draws by K.
  _, _, out_u2, _ = _one_update(method, params, _tree(1), inner=sgd,
                                grow_init='random_uniform_2')
  np.testing.assert_allclose(np.asarray(out_u2['w'])[grown], v / 2,
                             rtol=1e-6)


def test_bad_grow_init_is_one_clear_error():
  # The gradient ones are RigL's.
  with pytest.raises(ValueError, match="unknown grow_init 'grad_scale'.*"
                     "random_normal"):
    rigl_jax.sparsify(optax.sgd(0.1), 'set', sparsity=0.5, end_step=10,
                      grow_init='grad_scale')
  for bad in ('ones', 'random_normal_0', 'random_normal_x'):
    with pytest.raises(ValueError, match='unknown grow_init'):
      rigl_jax.sparsify(optax.sgd(0.1), 'rigl', sparsity=0.5, end_step=10,
                        grow_init=bad)
  assert base.parse_grow_init('random_uniform_0.5') == ('random_uniform', 0.5)


def test_drop_noise_breaks_ties_at_random_and_from_the_seed():
  # Every active weight equal: which ones are dropped is decided by the
  # noise alone (none: by position).
  params = {'w': jnp.ones(SHAPE)}
  grads = _tree(1)
  kwargs = dict(init_masks={'w': jnp.arange(np.prod(SHAPE)).reshape(SHAPE)
                            % 5 == 0})
  no_noise = _one_update('rigl', params, grads, noise_std=0.0, **kwargs)[1]
  a = _one_update('rigl', params, grads, seed=0, **kwargs)[1]
  b = _one_update('rigl', params, grads, seed=0, **kwargs)[1]
  c = _one_update('rigl', params, grads, seed=1, **kwargs)[1]
  np.testing.assert_array_equal(a, b)
  assert (a != no_noise).any() and (a != c).any()
  assert a.sum() == b.sum() == c.sum() == no_noise.sum()


def test_drop_noise_keeps_the_order_of_distinct_weights():
  # Weights 1e-2 apart: noise of std 1e-5 changes nothing.
  w = (jnp.arange(np.prod(SHAPE), dtype=jnp.float32).reshape(SHAPE) + 1) * 1e-2
  grads = _tree(1)
  want = _one_update('rigl', {'w': w}, grads, noise_std=0.0)[1]
  got = _one_update('rigl', {'w': w}, grads)[1]
  np.testing.assert_array_equal(got, want)
  with pytest.raises(ValueError, match='noise_std'):
    rigl_jax.sparsify(optax.sgd(0.1), 'rigl', sparsity=0.5, end_step=10,
                      noise_std=-1.0)


def test_rigl_acc_scale_starts_the_momentum_of_new_connections():
  grads = _tree(1)
  inner = optax.sgd(0.1, momentum=0.9)
  old, new, _, state = _one_update('rigl', _tree(0), grads, inner=inner,
                                   rigl_acc_scale=2.0)
  grown = new & ~old
  trace = np.asarray(jax.tree.leaves(state.inner_state)[0])
  np.testing.assert_allclose(trace[grown], 2.0 * np.asarray(grads['w'])[grown],
                             rtol=1e-6)
  np.testing.assert_array_equal(trace[~new], 0.0)
  _, _, _, plain = _one_update('rigl', _tree(0), grads, inner=inner)
  np.testing.assert_array_equal(
      np.asarray(jax.tree.leaves(plain.inner_state)[0])[grown], 0.0)
