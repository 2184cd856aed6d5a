"""N:M structured sparsity: masks keep N of every M after every update."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import rigl_jax
from rigl_jax import structure
from tests import helpers


def test_parse():
  assert structure.parse('2:4') == (2, 4)
  assert structure.parse((1, 4)) == (1, 4)
  assert structure.parse('unstructured') is None
  for bad in ('4:4', '0:4', '2-4', 'nm'):
    with pytest.raises(ValueError):
      structure.parse(bad)


def test_group_top_picks_best_per_group_ties_by_position():
  # One output column, in=8 -> two groups of 4.
  scores = jnp.asarray([0.1, 0.9, 0.5, 0.5, 3.0, 3.0, 3.0, 3.0])[:, None]
  mask = structure.group_top(scores, 2, 4)
  assert mask[:, 0].tolist() == [False, True, True, False,
                                 True, True, False, False]
  valid = jnp.asarray([1, 0, 1, 1, 1, 1, 1, 1], bool)[:, None]
  mask = structure.group_top(scores, 2, 4, valid)
  assert mask[:, 0].tolist() == [False, False, True, True,
                                 True, True, False, False]


def test_regrow_fills_each_group_back_to_n():
  kept = jnp.asarray([1, 0, 0, 0, 1, 1, 0, 0], bool)[:, None]
  scores = jnp.asarray([0., 1., 5., 2., 9., 9., 9., 1.])[:, None]
  grow = structure.regrow(kept, scores, (2, 4))
  assert grow[:, 0].tolist() == [False, False, True, False,
                                 False, False, False, False]


def _params():
  return helpers.mlp_params(sizes=(12, 24, 16, 4))


# Every method under 2:4, and 1:4 with static and SET; all under -m slow.
@pytest.mark.parametrize('nm, method', [
    pytest.param(nm, m, marks=pytest.mark.slow)
    if nm == '1:4' and m in ('snfs', 'rigl') else (nm, m)
    for nm in ('2:4', '1:4') for m in ('static', 'set', 'snfs', 'rigl')])
def test_nm_constraint_holds_after_every_update(method, nm):
  n, m = structure.parse(nm)
  tx = rigl_jax.sparsify(optax.sgd(0.1, momentum=0.9), method,
                         sparsity=1 - n / m, structure=nm, update_freq=2,
                         end_step=20, drop_fraction=0.5,
                         drop_fraction_schedule='constant')
  params, state = rigl_jax.masked_init(tx, _params())
  step = helpers.make_step(tx)
  first = rigl_jax.get_masks(state)
  changed = False
  for t in range(10):
    params, state = step(params, state, helpers.batch(t, d=12))
    masks = rigl_jax.get_masks(state)
    for mk, p in zip(jax.tree.leaves(masks), jax.tree.leaves(
        rigl_jax.apply_masks(params, masks))):
      assert structure.satisfies(mk, (n, m))
    for mk, p in zip(jax.tree.leaves(masks), jax.tree.leaves(
        {k: v['kernel'] for k, v in params.items()})):
      assert np.all(np.asarray(p)[~np.asarray(mk)] == 0)
    changed |= any(bool(jnp.any(a != b)) for a, b in zip(
        jax.tree.leaves(first), jax.tree.leaves(masks)))
  assert changed == (method != 'static')


def test_nm_pruning_ends_exactly_n_of_m():
  tx = rigl_jax.sparsify(optax.sgd(0.1), 'pruning', sparsity=0.5,
                         structure='2:4', update_freq=2, end_step=10)
  params, state = rigl_jax.masked_init(tx, _params())
  step = helpers.make_step(tx)
  for t in range(12):
    params, state = step(params, state, helpers.batch(t, d=12))
    for mk in jax.tree.leaves(rigl_jax.get_masks(state)):
      # Never below N per group while pruning.
      g = np.asarray(mk).reshape(-1, 4, mk.shape[-1]).sum(1)
      assert g.min() >= 2
  for mk in jax.tree.leaves(rigl_jax.get_masks(state)):
    assert structure.satisfies(mk, (2, 4))


@pytest.mark.parametrize('kwargs, needle', [
    (dict(sparsity=0.9), 'fixes every sparse layer at sparsity 0.5'),
    (dict(sparsity=0.5, custom_sparsity={'Dense_0': 0.1}), 'custom_sparsity'),
    (dict(sparsity=0.5, structure='3:3'), '0 < N < M'),
])
def test_nm_bad_arguments(kwargs, needle):
  kwargs.setdefault('structure', '2:4')
  with pytest.raises(ValueError, match=needle):
    rigl_jax.sparsify(optax.sgd(0.1), 'rigl', end_step=10, **kwargs)


def test_nm_layer_that_does_not_split_is_named():
  tx = rigl_jax.sparsify(optax.sgd(0.1), 'rigl', sparsity=0.5,
                         structure='2:4', end_step=10)
  params = helpers.mlp_params(sizes=(10, 24, 4))
  with pytest.raises(ValueError, match=r'Dense_0/kernel with shape \(10, 24\)'):
    tx.init(params)


def test_nm_from_config_and_conv_kernel():
  tx = rigl_jax.from_config(optax.sgd(0.1), {
      'method': 'rigl', 'sparsity': 0.75, 'structure': '1:4', 'end_step': 10})
  params = {'conv': {'kernel': jnp.ones((3, 3, 8, 16))}}
  _, state = rigl_jax.masked_init(tx, params)
  mask = rigl_jax.get_masks(state)['conv']['kernel']
  assert structure.satisfies(mask, (1, 4))
  assert int(mask.sum()) == 3 * 3 * 2 * 16
