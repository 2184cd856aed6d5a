"""The zoo's transformers: sizes, causality, scanned vs unrolled blocks."""

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


@pytest.mark.parametrize('name', [
    'transformer_lm', pytest.param('vit', marks=pytest.mark.slow)])
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
