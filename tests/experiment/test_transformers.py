"""The zoo's transformers: sizes, causality, scanned vs unrolled blocks."""

import json
import os

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import rigl_jax
from rigl_jax.experiment import models
from rigl_jax.experiment.models import transformer

SMALL = {'embed_dim': 32, 'num_layers': 3, 'num_heads': 2, 'mlp_dim': 64}
# The transformer configs' rule: Flax's kernels and token embeddings (the
# core's default would also take the 2-D position embedding and ViT's
# class token).
IS_SPARSE = ['(kernel|embedding)$']


def _count(model, x):
  shapes = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), x,
                                             train=False))
  return sum(int(np.prod(v.shape)) for v in jax.tree.leaves(shapes))


def test_parameter_counts():
  # ViT-B/16 at 224 with 1000 classes: 86,567,656 (timm's
  # vit_base_patch16_224 has the same layers).
  vit_b16 = models.get_model('vit', num_classes=1000, embed_dim=768,
                             num_layers=12, num_heads=12, mlp_dim=3072)
  assert _count(vit_b16, jnp.zeros((1, 224, 224, 3))) == 86_567_656
  # A language model by hand: embeddings, positions, per block two
  # LayerNorms, Q/K/V/O with biases and the MLP, the final norm, the head.
  d, f, v, t, n = 32, 64, 65, 16, 3
  block = 2 * 2 * d + 4 * (d * d + d) + (d * f + f) + (f * d + d)
  want = v * d + t * d + n * block + 2 * d + (d * v + v)
  lm = models.get_model('transformer_lm', num_classes=v, max_len=t, **SMALL)
  assert _count(lm, jnp.zeros((1, t), jnp.int32)) == want
  tied = models.get_model('transformer_lm', num_classes=v, max_len=t,
                          tie_embeddings=True, **SMALL)
  assert _count(tied, jnp.zeros((1, t), jnp.int32)) == want - (d * v + v)


def test_language_model_is_causal():
  lm = models.get_model('transformer_lm', num_classes=11, max_len=8, **SMALL)
  a = jnp.array([[1, 2, 3, 4, 5, 6, 7, 8]])
  b = a.at[0, 5].set(9)  # change position 5
  variables = lm.init(jax.random.PRNGKey(0), a, train=False)
  la, lb = lm.apply(variables, a, train=False), lm.apply(variables, b,
                                                           train=False)
  np.testing.assert_allclose(la[0, :5], lb[0, :5], atol=1e-6)
  assert not np.allclose(la[0, 5:], lb[0, 5:])
  with pytest.raises(ValueError, match='max_len=8'):
    lm.apply(variables, jnp.zeros((1, 9), jnp.int32), train=False)


# The experiment-level layout test below covers the LM in the default suite.
@pytest.mark.slow
@pytest.mark.parametrize('name', ['transformer_lm', 'vit'])
def test_scanned_blocks_train_like_unrolled_ones(name):
  """The same weights, stacked or unrolled, give the same masks and losses
  under RigL (the stacked leaves declared with `STACKED`)."""
  kw = dict(SMALL, max_len=8) if name == 'transformer_lm' else dict(
      SMALL, patch_size=7)
  x = (jax.random.randint(jax.random.PRNGKey(1), (4, 8), 0, 13)
       if name == 'transformer_lm' else
       jax.random.normal(jax.random.PRNGKey(1), (4, 28, 28, 1)))
  y = (x if name == 'transformer_lm' else jnp.arange(4) % 13)
  scanned = models.get_model(name, num_classes=13, scan_layers=True, **kw)
  unrolled = models.get_model(name, num_classes=13, **kw)
  p_scan = scanned.init(jax.random.PRNGKey(0), x, train=False)['params']
  p_unrolled = transformer.unstack_blocks(p_scan, SMALL['num_layers'])
  assert models.stacked_leaves(name, {'scan_layers': True}) == (
      transformer.STACKED)

  def run(model, params, stacked, init_masks=None):
    tx = rigl_jax.rigl(optax.adam(1e-2), sparsity=0.8, update_freq=2,
                       end_step=100, stacked=stacked, init_masks=init_masks,
                       is_sparse=IS_SPARSE)
    params, state = rigl_jax.masked_init(tx, params)

    @jax.jit
    def step(params, state):
      def loss(p):
        logits = model.apply({'params': p}, x, train=True)
        return optax.softmax_cross_entropy_with_integer_labels(
            logits, y).mean()
      value, grads = jax.value_and_grad(loss)(params)
      updates, state = tx.update(grads, state, params)
      return optax.apply_updates(params, updates), state, value

    first, losses = rigl_jax.get_masks(state), []
    for _ in range(5):
      params, state, value = step(params, state)
      losses.append(float(value))
    return first, rigl_jax.get_masks(state), losses

  # The random initial masks are drawn layer after layer in leaf order,
  # which stacking changes; start both from the unrolled model's, then
  # every drop, grow and count must agree.
  first, m_unrolled, l_unrolled = run(unrolled, p_unrolled, None)
  _, m_scan, l_scan = run(scanned, p_scan, transformer.STACKED,
                          transformer.stack_blocks(first, SMALL['num_layers']))
  np.testing.assert_allclose(l_scan, l_unrolled, rtol=2e-5)
  m_scan = transformer.unstack_blocks(m_scan, SMALL['num_layers'])
  flat_a = flax.traverse_util.flatten_dict(m_scan, sep='/')
  flat_b = flax.traverse_util.flatten_dict(m_unrolled, sep='/')
  assert flat_a.keys() == flat_b.keys()
  # A scanned block computes its gradients in another order than unrolled
  # ones (last-bit differences), so a near-tie at the top-k threshold may
  # go the other way: the same counts, and at most a swap or two.
  sparse, differ, total = 0, 0, 0
  for k in flat_a:
    if flat_a[k] is None:
      assert flat_b[k] is None, k
      continue
    sparse += 1
    a, b = np.asarray(flat_a[k]), np.asarray(flat_b[k])
    assert a.sum() == b.sum(), k
    differ, total = differ + int((a != b).sum()), total + a.size
  assert differ <= 4, (differ, total)
  # Attention, MLP, embedding and head kernels are sparse; biases and
  # norms are not.
  dense_kinds = ('bias', 'ln1', 'ln2', 'ln_f', 'pos_embed', 'cls')
  assert not any(part in dense_kinds for k in flat_a if flat_a[k] is not None
                 for part in k.split('/'))
  assert sparse >= 6 * SMALL['num_layers']


# --- the experiment system -------------------------------------------------

def _tiny(name, scan, steps, **overrides):
  from tests.runs import tiny_transformer_config  # pylint: disable=g-import-not-at-top
  return tiny_transformer_config(name, scan, steps, **overrides)


def _final(config, workdir):
  from rigl_jax.experiment import builders  # pylint: disable=g-import-not-at-top
  state, _ = builders.restore_train_state(config, workdir)
  params, masks = state.params, rigl_jax.get_masks(state.opt_state)
  if config.model.kwargs.scan_layers:
    n = config.model.kwargs.num_layers
    params = transformer.unstack_blocks(params, n)
    masks = transformer.unstack_blocks(masks, n)
  return (state, flax.traverse_util.flatten_dict(params, sep='/'),
          flax.traverse_util.flatten_dict(masks, sep='/'))


def _losses(workdir):
  with open(os.path.join(workdir, 'metrics.jsonl'), encoding='utf-8') as f:
    rows = [json.loads(line) for line in f]
  return [r['train_loss'] for r in rows if 'train_loss' in r]


# ~60 s per model here; the core's scanned-vs-unrolled tests
# (tests/core/test_composition.py) keep the rule in the default suite.
@pytest.mark.slow
@pytest.mark.parametrize('name', ['transformer_lm', 'vit'])
def test_scan_layers_changes_the_layout_not_the_run(name, tmp_path):
  """`train_and_evaluate`, scanned and unrolled, same seed: the unrolled
  model starts from the scanned one's weights and masks (unstacked), and
  RigL then drops and grows the same connections with the same losses."""
  from rigl_jax.experiment import train  # pylint: disable=g-import-not-at-top
  runs = {}
  for scan in (True, False):
    # No drop-score noise: its per-layer keys follow the leaf order, which
    # stacking changes (the evidence's layout runs keep the default noise
    # and report the difference it makes).
    config = _tiny(name, scan, steps=6, **{'sparsity.noise_std': 0.0})
    workdir = str(tmp_path / str(scan))
    result = train.train_and_evaluate(config, workdir)
    assert np.isfinite(result['test_loss'])
    runs[scan] = (result, _losses(workdir), *_final(config, workdir)[1:])
  (res_s, loss_s, p_s, m_s), (res_u, loss_u, p_u, m_u) = runs[True], runs[
      False]
  assert len(loss_s) == 6
  # Equal until a near-tie at a top-k threshold swaps (see below; the ViT
  # at its step-2 update), then within 1e-3.
  np.testing.assert_allclose(loss_s[:3], loss_u[:3], rtol=1e-5)
  np.testing.assert_allclose(loss_s, loss_u, rtol=1e-3)
  assert res_s['test_loss'] == pytest.approx(res_u['test_loss'], rel=1e-3)
  assert p_s.keys() == p_u.keys() and m_s.keys() == m_u.keys()
  sparse = [k for k in m_s if m_s[k] is not None]
  assert sparse and all(m_u[k] is not None for k in sparse)
  # Mask updates at steps 0, 2 and 4: a scanned block sums its gradients
  # in another order (last bits), so a near-tie may swap; nothing else.
  differ = sum(int((np.asarray(m_s[k]) != np.asarray(m_u[k])).sum())
               for k in sparse)
  active = sum(int(np.asarray(m_s[k]).sum()) for k in sparse)
  # The LM: none or a swap or two; the ViT: a swap at step 2 changes the
  # gradients of step 4's update (12 entries differed, under 1%).
  assert differ <= max(4, active // 100), (differ, active)
  for k in sparse:
    assert np.asarray(m_s[k]).sum() == np.asarray(m_u[k]).sum(), k


@pytest.mark.slow  # ~50 s; the zoo-wide trace test below stays default
def test_bfloat16_computes_in_bf16_and_keeps_float32_state(tmp_path):
  from rigl_jax.experiment import train  # pylint: disable=g-import-not-at-top
  config = _tiny('transformer_lm', True, steps=4, **{'model.dtype':
                                                      'bfloat16'})
  result = train.train_and_evaluate(config, str(tmp_path))
  assert np.isfinite(result['test_loss'])
  state, _, masks = _final(config, str(tmp_path))
  for leaf in jax.tree.leaves(state.params):
    assert leaf.dtype == jnp.float32
  floats = [x for x in jax.tree.leaves(state.opt_state)
            if jnp.issubdtype(x.dtype, jnp.floating)]
  assert floats and all(x.dtype == jnp.float32 for x in floats)
  assert all(m.dtype == bool for m in masks.values() if m is not None)


def _dot_dtypes(fn, *args):
  """Operand dtypes of every dot_general / conv in ``fn``'s jaxpr."""
  found = set()

  def walk(jaxpr):
    for eqn in jaxpr.eqns:
      if eqn.primitive.name in ('dot_general', 'conv_general_dilated'):
        found.update(str(v.aval.dtype) for v in eqn.invars)
      for sub in jax.core.jaxprs_in_params(eqn.params):
        walk(sub)

  walk(jax.make_jaxpr(fn)(*args).jaxpr)
  return found


@pytest.mark.parametrize('name', sorted(models.MODELS))
def test_every_model_computes_in_bfloat16_with_float32_params(name):
  kwargs = {'vit': dict(SMALL, patch_size=7),
            'transformer_lm': dict(SMALL, max_len=8),
            'char_lstm': {'embed_dim': 8, 'hidden_size': 16}}.get(name, {})
  text = name in ('char_lstm', 'transformer_lm')
  x = (jnp.zeros((2, 8), jnp.int32) if text else
       jnp.zeros((2, 32, 32, 3) if 'lenet' not in name and name not in (
           'mlp', 'small_cnn', 'vit') else (2, 28, 28, 1)))
  model = models.get_model(name, num_classes=10, dtype=jnp.bfloat16,
                           **kwargs)
  variables = jax.eval_shape(
      lambda: model.init(jax.random.PRNGKey(0), x, train=False))
  assert all(v.dtype == jnp.float32 for v in jax.tree.leaves(variables))
  params = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), variables)
  out = jax.eval_shape(lambda v: model.apply(v, x, train=False), params)
  assert out.dtype == jnp.float32
  assert _dot_dtypes(lambda v: model.apply(v, x, train=False),
                     params) == {'bfloat16'}


@pytest.mark.slow
@pytest.mark.parametrize('method', ['rigl', 'set'])
def test_stacked_slices_keep_their_nnz_over_many_updates(method):
  """A scanned LM with a mask update every step for 25 steps: every
  block's slice keeps its own count."""
  lm = models.get_model('transformer_lm', num_classes=13, max_len=8,
                        scan_layers=True, **SMALL)
  x = jax.random.randint(jax.random.PRNGKey(1), (4, 8), 0, 13)
  params = lm.init(jax.random.PRNGKey(0), x, train=False)['params']
  tx = rigl_jax.sparsify(optax.adam(3e-2), method, sparsity=0.8,
                         update_freq=1, end_step=25, drop_fraction=0.5,
                         stacked=transformer.STACKED, is_sparse=IS_SPARSE)
  params, state = rigl_jax.masked_init(tx, params)

  @jax.jit
  def step(params, state):
    def loss(p):
      return optax.softmax_cross_entropy_with_integer_labels(
          lm.apply({'params': p}, x, train=True), x).mean()
    updates, state = tx.update(jax.grad(loss)(params), state, params)
    return optax.apply_updates(params, updates), state

  def counts(state):
    masks = flax.traverse_util.flatten_dict(rigl_jax.get_masks(state),
                                            sep='/')
    return {k: np.asarray(m).reshape(m.shape[0], -1).sum(1)
            if k.startswith('encoder/blocks/') else np.asarray(m).sum()
            for k, m in masks.items() if m is not None}

  start, churn = counts(state), 0.0
  assert any(k.startswith('encoder/blocks/') for k in start)
  for _ in range(25):
    params, state = step(params, state)
    churn += float(rigl_jax.get_sparse_state(state).mask_churn)
    now = counts(state)
    for k in start:
      np.testing.assert_array_equal(now[k], start[k], err_msg=k)
  assert churn > 0  # the masks did change
