"""The core as other projects use it: chains, partitioned optimizers, stacked
layers, ensembles, optax's tree utilities, bad input. jax, optax, numpy only.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import rigl_jax
from rigl_jax import methods
from tests import helpers

mlp_params = helpers.mlp_params
loss_fn = helpers.loss_fn
batch = helpers.batch


def make_step(tx, loss=loss_fn):
  @jax.jit
  def step(params, state, b):
    grads = jax.grad(loss)(params, b)
    updates, state = tx.update(grads, state, params)
    return optax.apply_updates(params, updates), state
  return step


def assert_exactly_sparse(params, masks):
  for p, m in zip(jax.tree.leaves(params),
                  jax.tree.leaves(masks, is_leaf=lambda x: x is None)):
    if m is not None:
      assert int(jnp.sum((p != 0) & ~m)) == 0


# --- where sparsify sits in a chain -----------------------------------------

AFTER = {
    'scale': optax.scale(-1e-2),
    'scale_by_learning_rate': optax.scale_by_learning_rate(1e-2),
    'clip': optax.clip(1e-3),
}


# `scale_by_learning_rate` is `scale` by a schedule: -m slow.
_AFTER_CASES = [pytest.param(n, marks=pytest.mark.slow)
                if n == 'scale_by_learning_rate' else n for n in AFTER]


@pytest.mark.parametrize('name', _AFTER_CASES)
def test_transform_after_sparsify_is_rejected(name):
  # Old code: dropped weights never returned to 0, silently.
  tx = optax.chain(
      rigl_jax.rigl(optax.scale_by_adam(), sparsity=0.8, update_freq=3,
                    end_step=100, drop_fraction=0.5),
      AFTER[name])
  params, state = rigl_jax.masked_init(tx, mlp_params())
  step = make_step(tx)
  batches = [batch(t) for t in range(12)]
  with pytest.raises(Exception, match='sparsify must be the last'):
    for b in batches:
      # One step at a time: with steps queued behind the one whose host
      # callback raises, XLA:CPU's runtime has hung here (twice in ~6 runs).
      params, state = jax.block_until_ready(step(params, state, b))


def test_a_diverged_run_is_not_blamed_on_the_chain():
  # RigL's rigl_acc_scale with Adam sets the second moment of new
  # connections to a multiple of the gradient, as the reference sets every
  # slot: negative entries, NaN weights, which dropped positions keep
  # (p - p is NaN). Old code: the leak check told the user to move a
  # transformation out of the chain, which holds none.
  tx = rigl_jax.rigl(optax.adam(1e-2), sparsity=0.8, update_freq=3,
                     end_step=100, drop_fraction=0.5, rigl_acc_scale=0.5)
  params, state = rigl_jax.masked_init(tx, mlp_params())
  step = make_step(tx)
  with pytest.raises(Exception, match='NaN or infinite') as info:
    for t in range(12):
      params, state = jax.block_until_ready(step(params, state, batch(t)))
  assert 'sparsify must be the last' not in str(info.value)


@pytest.mark.parametrize('name', _AFTER_CASES)
def test_the_same_transform_inside_sparsify_is_exactly_sparse(name):
  tx = rigl_jax.rigl(optax.chain(optax.scale_by_adam(), AFTER[name],
                                 optax.scale(-1.0) if name == 'clip' else
                                 optax.identity()),
                     sparsity=0.8, update_freq=3, end_step=100,
                     drop_fraction=0.5)
  params, state = rigl_jax.masked_init(tx, mlp_params())
  step = make_step(tx)
  for t in range(12):
    params, state = step(params, state, batch(t))
    assert_exactly_sparse(params, rigl_jax.get_masks(state))
  assert float(state.mask_churn) > 0


def test_plain_gradient_transformation_inner_takes_extra_args():
  base = optax.sgd(0.1)
  plain = optax.GradientTransformation(base.init, base.update)
  tx = optax.chain(
      rigl_jax.rigl(plain, sparsity=0.5, end_step=100),
      optax.contrib.reduce_on_plateau())
  params, state = rigl_jax.masked_init(tx, mlp_params())
  grads = jax.grad(loss_fn)(params, batch(0))
  # Jitted: op by op, this update compiled ~120 small programs.
  updates, _ = jax.jit(tx.update)(grads, state, params,
                                  value=jnp.float32(1.0))
  assert jax.tree.structure(updates) == jax.tree.structure(params)


# --- optimizer state ----------------------------------------------------------


def _labels(params):
  return jax.tree_util.tree_map_with_path(
      lambda p, _: 'k' if p[-1].key == 'kernel' else 'b', params)


PARTITIONED = {
    'masked': lambda: optax.chain(
        optax.masked(optax.scale_by_adam(), lambda p: jax.tree.map(
            lambda x: x.ndim == 2, p)),
        optax.scale(-1e-2)),
    'multi_transform': lambda: optax.multi_transform(
        {'k': optax.adam(1e-2), 'b': optax.sgd(1e-2)}, _labels),
    'partition': lambda: optax.partition(
        {'k': optax.adam(1e-2), 'b': optax.sgd(1e-2)}, _labels),
}


@pytest.mark.parametrize('name', list(PARTITIONED))
def test_adam_moments_restart_at_grown_positions_in_partitioned_states(name):
  # Old code matched state subtrees to the params by tree structure, which
  # MaskedNode breaks: grown connections kept stale Adam moments.
  tx = rigl_jax.rigl(PARTITIONED[name](), sparsity=0.7, update_freq=5,
                     begin_step=5, end_step=100, drop_fraction=0.5,
                     drop_fraction_schedule='constant')
  params, state = rigl_jax.masked_init(tx, mlp_params())
  step = make_step(tx)
  for t in range(10):
    params, state = step(params, state, batch(t))
  before = rigl_jax.get_masks(state)
  params, state = step(params, state, batch(10))  # a mask update
  after = rigl_jax.get_masks(state)
  grown_total = 0
  for field in ('mu', 'nu'):
    found = optax.tree_utils.tree_get_all_with_path(state, field)
    assert found
    for _, tree in found:
      for layer in ('Dense_0', 'Dense_1', 'Dense_2'):
        moment = tree[layer]['kernel']
        if isinstance(moment, optax.MaskedNode):
          continue
        old, new = before[layer]['kernel'], after[layer]['kernel']
        grown = new & ~old
        grown_total += int(grown.sum())
        assert bool(jnp.all(jnp.where(grown | ~new, moment == 0, True)))
        assert bool(jnp.any(jnp.where(new & old, moment != 0, False)))
  assert grown_total > 0


@pytest.mark.parametrize('inner_name', ['sgd', 'adam'])
def test_learning_rate_follows_the_step_through_mask_updates(inner_name):
  # Old code held the whole inner state back on mask-update steps, schedule
  # counts included: after n updates the learning rate lagged by n steps.
  schedule = optax.linear_schedule(1.0, 0.0, 200)
  make = optax.sgd if inner_name == 'sgd' else optax.adam
  tx = rigl_jax.rigl(optax.inject_hyperparams(make)(learning_rate=schedule),
                     sparsity=0.5, update_freq=2, end_step=150)
  params, state = rigl_jax.masked_init(tx, mlp_params())
  step = make_step(tx)
  for t in range(41):
    params, state = step(params, state, batch(t))
  # 21 mask updates so far (steps 0, 2, ..., 40); 41 updates in all.
  for _, count in optax.tree_utils.tree_get_all_with_path(state, 'count'):
    assert int(count) == 41
  lr = rigl_jax.get_sparse_state(state).inner_state.hyperparams[
      'learning_rate']
  assert float(lr) == pytest.approx(float(schedule(40)))
  # The update applied at a plain step t is -schedule(t) * grad (plain SGD,
  # on a dense bias).
  if inner_name == 'sgd':
    grads = jax.jit(jax.grad(loss_fn))(params, batch(41))
    updates, _ = jax.jit(tx.update)(grads, state, params)
    np.testing.assert_allclose(
        np.asarray(updates['Dense_2']['bias']),
        -float(schedule(41)) * np.asarray(grads['Dense_2']['bias']),
        rtol=1e-6)


def test_tree_get_and_tree_set_reach_inner_hyperparameters():
  tx = rigl_jax.rigl(optax.inject_hyperparams(optax.sgd)(learning_rate=0.1),
                     sparsity=0.5, end_step=100, begin_step=50)
  params, state = rigl_jax.masked_init(tx, mlp_params())
  assert float(optax.tree_utils.tree_get(state, 'learning_rate')) == (
      pytest.approx(0.1))
  state = optax.tree_utils.tree_set(state, learning_rate=0.01)
  grads = jax.grad(loss_fn)(params, batch(0))
  updates, state = jax.jit(tx.update)(grads, state, params)
  np.testing.assert_allclose(np.asarray(updates['Dense_0']['bias']),
                             -0.01 * np.asarray(grads['Dense_0']['bias']),
                             rtol=1e-6)


def test_schedule_free_eval_params_are_sparse():
  # Old code left schedule-free's z at dropped positions: the eval params
  # (a mix of the iterate and z) were not sparse.
  tx = rigl_jax.set_(optax.contrib.schedule_free_sgd(0.5), sparsity=0.8,
                     update_freq=3, end_step=100, drop_fraction=0.5)
  params, state = rigl_jax.masked_init(tx, mlp_params())
  step = make_step(tx)
  for t in range(10):
    params, state = step(params, state, batch(t))
  sparse = rigl_jax.get_sparse_state(state)
  eval_params = optax.contrib.schedule_free_eval_params(sparse.inner_state,
                                                        params)
  assert_exactly_sparse(eval_params, rigl_jax.get_masks(state))
  assert float(sparse.mask_churn) > 0


# --- what is sparse -------------------------------------------------------------


def test_snfs_redistribution_leaves_custom_sparsity_leaves_alone():
  # Old code: a first layer fixed dense ended at density 0.25.
  tx = rigl_jax.snfs(optax.sgd(0.05, momentum=0.9), sparsity=0.8,
                     update_freq=2, end_step=60, drop_fraction=0.5,
                     drop_fraction_schedule='constant',
                     snfs_redistribution=True,
                     custom_sparsity={'Dense_0/kernel': 0.0,
                                      'Dense_2/kernel': 0.5})
  params, state = rigl_jax.masked_init(tx, mlp_params())
  masks0 = rigl_jax.get_masks(state)
  step = make_step(tx)
  moved = False
  for t in range(40):
    params, state = step(params, state, batch(t))
    masks = rigl_jax.get_masks(state)
    assert bool(masks['Dense_0']['kernel'].all())
    assert int(masks['Dense_2']['kernel'].sum()) == int(
        masks0['Dense_2']['kernel'].sum())
    moved |= bool((masks['Dense_2']['kernel'] !=
                   masks0['Dense_2']['kernel']).any())
  assert moved  # the fixed-sparsity leaf still drops and regrows


def transformer_params():
  d, h, dh, v, n = 8, 2, 4, 11, 3
  attn = {name: {'kernel': jnp.ones((d, h, dh)), 'bias': jnp.ones((h, dh))}
          for name in ('query', 'key', 'value')}
  attn['out'] = {'kernel': jnp.ones((h, dh, d)), 'bias': jnp.ones((d,))}
  return {
      'embed': {'embedding': jnp.ones((v, d))},
      'blocks': {
          'attn': attn,
          'mlp': {'wi': {'kernel': jnp.ones((n, d, 16)),
                         'bias': jnp.ones((n, 16))}},
          'LayerNorm_0': {'scale': jnp.ones((n, d)), 'bias': jnp.ones((n, d))},
          'pre_norm': {'weight': jnp.ones((n, d))},
      },
      'empty': {'kernel': jnp.ones((0, 4))},
      'step': jnp.zeros((2, 2), jnp.int32),
      'unused': None,
  }


def test_default_sparse_leaves_of_a_transformer_tree():
  # Old rule (ndim >= 2): attention biases, stacked LayerNorm scales and the
  # integer leaf were sparse too; None crashed.
  params = transformer_params()
  tx = rigl_jax.rigl(optax.sgd(0.1), sparsity=0.5, end_step=10,
                     distribution='uniform')
  _, state = rigl_jax.masked_init(tx, params)
  masks = rigl_jax.get_masks(state)
  flat = jax.tree_util.tree_flatten_with_path(
      masks, is_leaf=lambda x: x is None)[0]
  sparse = sorted(rigl_jax.path_str(p) for p, m in flat if m is not None)
  assert sparse == ['blocks/attn/key/kernel', 'blocks/attn/out/kernel',
                    'blocks/attn/query/kernel', 'blocks/attn/value/kernel',
                    'blocks/mlp/wi/kernel', 'embed/embedding']


@pytest.mark.parametrize('method', [
    pytest.param('set', marks=pytest.mark.slow),
    pytest.param('snfs', marks=pytest.mark.slow), 'rigl', 'pruning'])
def test_none_and_zero_size_leaves_pass_through(method):
  params = mlp_params()
  params['unused'] = None
  params['empty'] = {'kernel': jnp.zeros((0, 3))}

  def loss(p, b):
    return loss_fn({k: v for k, v in p.items() if k.startswith('Dense')}, b)

  tx = rigl_jax.sparsify(optax.sgd(0.1), method, sparsity=0.5,
                         update_freq=2, end_step=10)
  params, state = rigl_jax.masked_init(tx, params)
  step = make_step(tx, loss)
  for t in range(5):
    params, state = step(params, state, batch(t))
  assert params['unused'] is None
  assert rigl_jax.get_masks(state)['empty']['kernel'] is None
  assert all(bool(jnp.all(jnp.isfinite(x))) for x in jax.tree.leaves(params))


# --- stacked layers -----------------------------------------------------------


def _stacked_and_unrolled(n=3, key=0):
  ks = jax.random.split(jax.random.PRNGKey(key), 3)
  inp = jax.random.normal(ks[0], (12, 16)) / 4
  blocks = jax.random.normal(ks[1], (n, 16, 16)) / 4
  head = jax.random.normal(ks[2], (16, 4)) / 4
  stacked = {'a_in': {'kernel': inp}, 'b_blocks': {'kernel': blocks,
                                                   'bias': jnp.zeros((n, 16))},
             'c_head': {'kernel': head}}
  unrolled = {'a_in': {'kernel': inp}, 'c_head': {'kernel': head}}
  for i in range(n):
    unrolled[f'b_blocks_{i}'] = {'kernel': blocks[i], 'bias': jnp.zeros(16)}

  def forward(x, layers):
    x = jax.nn.relu(x @ layers[0])
    for w, b in layers[1]:
      x = jax.nn.relu(x @ w + b)
    return x @ layers[2]

  def stacked_loss(p, b):
    x, y = b
    blocks = [(p['b_blocks']['kernel'][i], p['b_blocks']['bias'][i])
              for i in range(n)]
    logits = forward(x, (p['a_in']['kernel'], blocks, p['c_head']['kernel']))
    return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

  def unrolled_loss(p, b):
    x, y = b
    blocks = [(p[f'b_blocks_{i}']['kernel'], p[f'b_blocks_{i}']['bias'])
              for i in range(n)]
    logits = forward(x, (p['a_in']['kernel'], blocks, p['c_head']['kernel']))
    return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

  return stacked, stacked_loss, unrolled, unrolled_loss


# RigL and pruning (the two selection paths: top-k by score, and by
# magnitude on a schedule) under ERK in the default suite; every method and
# uniform under -m slow.
@pytest.mark.parametrize('distribution, method', [
    (d, m) if d == 'erk' and m in ('rigl', 'pruning') else
    pytest.param(d, m, marks=pytest.mark.slow)
    for d in ('erk', 'uniform')
    for m in ('static', 'set', 'snfs', 'rigl', 'pruning', 'srigl',
              'granet')])
def test_scanned_stack_gets_the_masks_of_the_unrolled_model(method,
                                                            distribution):
  # Old code: ERK from the stack's shape and one top-k over all its layers.
  stacked, s_loss, unrolled, u_loss = _stacked_and_unrolled()
  kwargs = dict(sparsity=0.7, distribution=distribution, update_freq=2,
                end_step=30, drop_fraction=0.5)
  tx_s = rigl_jax.sparsify(optax.sgd(0.2, momentum=0.9), method,
                           stacked={'b_blocks/': 0}, **kwargs)
  tx_u = rigl_jax.sparsify(optax.sgd(0.2, momentum=0.9), method, **kwargs)
  p_s, s_s = rigl_jax.masked_init(tx_s, stacked)
  p_u, s_u = rigl_jax.masked_init(tx_u, unrolled)
  step_s, step_u = make_step(tx_s, s_loss), make_step(tx_u, u_loss)
  nnz0 = [int(rigl_jax.get_masks(s_s)['b_blocks']['kernel'][i].sum())
          for i in range(3)]
  for t in range(8):
    m_s, m_u = rigl_jax.get_masks(s_s), rigl_jax.get_masks(s_u)
    for i in range(3):
      np.testing.assert_array_equal(
          np.asarray(m_s['b_blocks']['kernel'][i]),
          np.asarray(m_u[f'b_blocks_{i}']['kernel']))
      if method not in ('pruning', 'granet', 'srigl'):  # these move nnz
        assert int(m_s['b_blocks']['kernel'][i].sum()) == nnz0[i]
    for name in ('a_in', 'c_head'):
      np.testing.assert_array_equal(np.asarray(m_s[name]['kernel']),
                                    np.asarray(m_u[name]['kernel']))
    p_s, s_s = step_s(p_s, s_s, batch(t))
    p_u, s_u = step_u(p_u, s_u, batch(t))
  if method != 'static':
    assert float(s_s.mask_churn) > 0


def test_stacked_bad_axis():
  tx = rigl_jax.rigl(optax.sgd(0.1), sparsity=0.5, end_step=10,
                     stacked={'b_blocks/kernel': 3})
  with pytest.raises(ValueError, match='stacked declares axis 3'):
    tx.init(_stacked_and_unrolled()[0])


def test_stacked_pattern_matching_no_sparse_leaf_is_an_error():
  # A typo ('block/' for 'blocks/') used to be ignored: the stack was
  # then one layer, ERK and top-k over all of it, without a word.
  tx = rigl_jax.rigl(optax.sgd(0.1), sparsity=0.5, end_step=10,
                     stacked={'b_block/': 0})
  with pytest.raises(ValueError, match=r"stacked names 'b_block/', which "
                     r"matches no sparse leaf; the sparse leaves are \[.*"
                     r"b_blocks/kernel"):
    tx.init(_stacked_and_unrolled()[0])


# --- ensembles ----------------------------------------------------------------


def test_vmapped_ensemble_members_differ_and_keep_the_conditional():
  tx = rigl_jax.set_(optax.sgd(0.1, momentum=0.9), sparsity=0.7,
                     update_freq=4, end_step=100, drop_fraction=0.5)
  keys = jax.random.split(jax.random.PRNGKey(0), 3)
  params, state = jax.vmap(
      lambda k: rigl_jax.masked_init(tx, mlp_params(), key=k))(keys)
  masks = rigl_jax.get_masks(state)['Dense_1']['kernel']
  assert masks.shape == (3, 24, 16)
  assert bool((masks[0] != masks[1]).any()) and bool(
      (masks[1] != masks[2]).any())

  def step(p, s, b):
    g = jax.grad(loss_fn)(p, b)
    u, s = tx.update(g, s, p)
    return optax.apply_updates(p, u), s

  vstep = jax.jit(jax.vmap(step, in_axes=(0, 0, None)))
  # The mask update stays a conditional (not a select run on every step).
  jaxpr = str(jax.make_jaxpr(jax.vmap(step, in_axes=(0, 0, None)))(
      params, state, batch(0)))
  assert 'cond[' in jaxpr
  # Each member trains exactly as it would alone.
  member = jax.tree.map(lambda x: x[1], (params, state))
  jstep = jax.jit(step)
  for t in range(9):
    params, state = vstep(params, state, batch(t))
    member = jstep(*member, batch(t))
  np.testing.assert_array_equal(
      np.asarray(rigl_jax.get_masks(state)['Dense_1']['kernel'][1]),
      np.asarray(rigl_jax.get_masks(member[1])['Dense_1']['kernel']))
  np.testing.assert_allclose(np.asarray(params['Dense_1']['kernel'][1]),
                             np.asarray(member[0]['Dense_1']['kernel']),
                             rtol=1e-5, atol=1e-6)


# --- methods are open ---------------------------------------------------------


def _weight_scores(weight, grad, aux, key):
  del grad, aux, key
  return jnp.zeros_like(weight)  # all tie: the first free position grows


def test_a_new_method_is_one_registration():
  methods.register('first_free', lambda: methods.DropAndGrow(
      'first_free', _weight_scores))
  try:
    assert 'first_free' in methods.names()
    tx = rigl_jax.sparsify(optax.sgd(0.1), 'first_free', sparsity=0.5,
                           update_freq=1, end_step=10, drop_fraction=0.5,
                           drop_fraction_schedule='constant',
                           init_masks={'w': jnp.array([[True, True, False,
                                                        False]])})
    params = {'w': jnp.array([[2.0, 1.0, 0.0, 0.0]])}
    params, state = rigl_jax.masked_init(tx, params)
    updates, state = tx.update({'w': jnp.ones((1, 4))}, state, params)
    # Drop the smaller active weight (1.0); all scores tie at 0 among the
    # free positions, so the first free position (index 1) regrows.
    np.testing.assert_array_equal(
        np.asarray(rigl_jax.get_masks(state)['w']), [[True, True, False,
                                                      False]])
    obj = rigl_jax.sparsify(optax.sgd(0.1), methods.DropAndGrow(
        'mine', _weight_scores), sparsity=0.5, end_step=10)
    assert obj.method.name == 'mine'
    cfg = rigl_jax.from_config(optax.sgd(0.1), dict(
        method='first_free', sparsity=0.5, end_step=10))
    assert cfg.method.name == 'first_free'
  finally:
    methods.unregister('first_free')


def test_schedule_object_is_shared():
  tx = rigl_jax.pruning(optax.sgd(0.1), sparsity=0.5, update_freq=10,
                        begin_step=5, end_step=42)
  steps = [t for t in range(60) if tx.schedule.is_update_step(t)]
  assert steps == [5, 15, 25, 35, 42]
  assert bool(tx.schedule.is_update_step(jnp.int32(42)))
  assert rigl_jax.static(optax.sgd(0.1), sparsity=0.5).schedule.end_step is (
      None)


# --- bad input ----------------------------------------------------------------


def test_no_sparse_leaf_is_an_error():
  tx = rigl_jax.rigl(optax.sgd(0.1), sparsity=0.5, end_step=10,
                     is_sparse='kernal')
  with pytest.raises(ValueError, match="found no sparse leaf.*kernal"):
    tx.init(mlp_params())


@pytest.mark.parametrize('fill, match', [(1.0, 'must be boolean'),
                                         (False, 'no active weight')])
def test_bad_init_masks(fill, match):
  params = mlp_params()
  init = jax.tree.map(lambda p: jnp.full(p.shape, fill) if p.ndim == 2
                      else None, params)
  tx = rigl_jax.rigl(optax.sgd(0.1), sparsity=0.5, end_step=10,
                     init_masks=init)
  with pytest.raises(ValueError, match=r"init_masks\['Dense_0/kernel'\]"):
    tx.init(params)
  with pytest.raises(ValueError, match=match):
    tx.init(params)


def test_trees_that_do_not_match_init_name_the_leaf():
  tx = rigl_jax.rigl(optax.sgd(0.1), sparsity=0.5, end_step=10)
  params, state = rigl_jax.masked_init(tx, mlp_params())
  grads = jax.grad(loss_fn)(params, batch(0))
  extra = dict(params, Dense_9={'kernel': jnp.ones((2, 2))})
  with pytest.raises(ValueError, match="'Dense_9/kernel'"):
    tx.update(grads, state, extra)
  short = {k: v for k, v in grads.items() if k != 'Dense_1'}
  with pytest.raises(ValueError, match='gradients.*Dense_'):
    tx.update(short, state, params)
  wrong = jax.tree.map(lambda x: x, params)
  wrong['Dense_1']['kernel'] = jnp.ones((3, 3))
  with pytest.raises(ValueError, match="'Dense_1/kernel' has shape"):
    tx.update(grads, state, wrong)
  with pytest.raises(ValueError, match='not the SparseState'):
    tx.update(grads, state.inner_state, params)


def test_uncalled_optax_factory_is_an_error():
  with pytest.raises(ValueError, match=r'optax\.adam itself, not called'):
    rigl_jax.rigl(optax.adam, sparsity=0.5, end_step=10)


# --- Flax users' own train states ---------------------------------------------


def test_flax_train_state_apply_gradients_trains_a_scanned_model():
  """The README's TrainState recipe, on an nn.scan-stacked linen model."""
  nn = pytest.importorskip('flax.linen')
  train_state = pytest.importorskip('flax.training.train_state')

  class Block(nn.Module):

    @nn.compact
    def __call__(self, x, _):
      return x + nn.Dense(x.shape[-1])(jax.nn.relu(nn.LayerNorm()(x))), None

  class Model(nn.Module):

    @nn.compact
    def __call__(self, x):
      x = nn.Dense(16)(x)
      x, _ = nn.scan(Block, variable_axes={'params': 0},
                     split_rngs={'params': True}, length=3)()(x, None)
      return nn.Dense(4)(x)

  model = Model()
  params = model.init(jax.random.PRNGKey(0), jnp.zeros((1, 12)))['params']
  assert params['ScanBlock_0']['Dense_0']['kernel'].shape == (3, 16, 16)
  tx = rigl_jax.rigl(optax.sgd(0.1, momentum=0.9), sparsity=0.75,
                     distribution='uniform', update_freq=4, end_step=40,
                     drop_fraction=0.5, drop_fraction_schedule='constant',
                     stacked={'ScanBlock_0/': 0})
  params, opt_state = rigl_jax.masked_init(tx, params)
  state = train_state.TrainState(step=0, apply_fn=model.apply, params=params,
                                 tx=tx, opt_state=opt_state)

  @jax.jit
  def step(state, b):
    x, y = b

    def loss(p):
      logits = state.apply_fn({'params': p}, x)
      return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

    return state.apply_gradients(grads=jax.grad(loss)(state.params))

  masks0 = rigl_jax.get_masks(state.opt_state)
  for t in range(21):
    state = step(state, batch(t))
  masks = rigl_jax.get_masks(state.opt_state)
  assert_exactly_sparse(state.params, masks)
  stacked = masks['ScanBlock_0']['Dense_0']['kernel']
  # Each of the three stacked layers keeps its own 25% (uniform).
  np.testing.assert_array_equal(np.asarray(stacked.sum(axis=(1, 2))),
                                [64, 64, 64])
  assert bool(jnp.any(stacked != masks0['ScanBlock_0']['Dense_0']['kernel']))
  assert masks['ScanBlock_0']['LayerNorm_0']['scale'] is None
  assert masks['ScanBlock_0']['Dense_0']['bias'] is None
  assert int(rigl_jax.get_sparse_state(state.opt_state).step) == 21
