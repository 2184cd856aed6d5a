"""Tutorial 2: a scanned transformer with `stacked`.

Flax projects (MaxText, big_vision, t5x style) stack their blocks with
`nn.scan`, so every block parameter is one leaf holding all layers along
axis 0. Declaring that axis to `sparsify(..., stacked={regex: axis})` makes
each slice its own layer: ERK from the slice's shape, its own drop/grow
counts, top-k and nnz, i.e. the masks of the same model unrolled.

A 3-block character transformer on the bundled Shakespeare corpus, RigL at
90% ERK; the script checks that each block keeps its own nonzero count
through every mask update.

Run: python docs/tutorials/scanned_transformer.py   (about a minute)
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

import rigl_jax
from rigl_jax.experiment.data import shakespeare

LAYERS, WIDTH, HEADS, SEQ, BATCH, STEPS = 3, 64, 4, 64, 32, 300
corpus = shakespeare.load()
train_ids = np.asarray(corpus.split('train'), np.int32)
vocab = len(corpus.vocab.chars)


class Block(nn.Module):
  """Pre-norm attention + MLP; the scan carry is the residual stream."""

  @nn.compact
  def __call__(self, x, _):
    h = nn.LayerNorm()(x)
    mask = nn.make_causal_mask(jnp.ones(x.shape[:2]))
    x = x + nn.MultiHeadDotProductAttention(HEADS)(h, h, mask=mask)
    h = nn.LayerNorm()(x)
    x = x + nn.Dense(WIDTH)(nn.gelu(nn.Dense(4 * WIDTH)(h)))
    return x, None


class CharTransformer(nn.Module):

  @nn.compact
  def __call__(self, tokens):
    x = nn.Embed(vocab, WIDTH)(tokens)
    x = x + self.param('pos_embed', nn.initializers.normal(0.02),
                       (SEQ, WIDTH))
    blocks = nn.scan(Block, variable_axes={'params': 0},
                     split_rngs={'params': True}, length=LAYERS)
    x, _ = blocks(name='blocks')(x, None)
    return nn.Dense(vocab)(nn.LayerNorm()(x))


model = CharTransformer()
params = model.init(jax.random.PRNGKey(0), jnp.zeros((1, SEQ), jnp.int32))[
    'params']
print('a stacked leaf:', params['blocks']['Dense_0']['kernel'].shape)

tx = rigl_jax.rigl(optax.adamw(3e-3, weight_decay=1e-4), sparsity=0.9,
                   distribution='erk', update_freq=25,
                   end_step=int(0.75 * STEPS),
                   stacked={'blocks/': 0})  # every leaf under blocks/: axis 0
params, opt_state = rigl_jax.masked_init(tx, params)


@jax.jit
def train_step(params, opt_state, tokens):
  def loss_fn(params):
    logits = model.apply({'params': params}, tokens[:, :-1])
    return optax.softmax_cross_entropy_with_integer_labels(
        logits, tokens[:, 1:]).mean()
  loss, grads = jax.value_and_grad(loss_fn)(params)
  updates, opt_state = tx.update(grads, opt_state, params)
  return optax.apply_updates(params, updates), opt_state, loss


def per_block_nnz(opt_state):
  """Nonzeros of each block's slice of every stacked sparse kernel."""
  masks = rigl_jax.get_masks(opt_state)['blocks']
  return {rigl_jax.path_str(p): np.asarray(m).reshape(LAYERS, -1).sum(1)
          for p, m in jax.tree_util.tree_leaves_with_path(masks)}


start = per_block_nnz(opt_state)
rng = np.random.default_rng(0)
for step in range(STEPS):
  starts = rng.integers(0, len(train_ids) - SEQ - 1, BATCH)
  tokens = np.stack([train_ids[s:s + SEQ + 1] for s in starts])
  params, opt_state, loss = train_step(params, opt_state, tokens)
  if step % 100 == 0 or step == STEPS - 1:
    print(f'step {step}: loss {float(loss):.3f} '
          f'({float(loss) / np.log(2):.2f} bits/char)')

end = per_block_nnz(opt_state)
for name, counts in start.items():
  print(f'  blocks/{name}: nnz per block {counts.tolist()}')
  np.testing.assert_array_equal(counts, end[name])  # each block keeps its own
sparsity = rigl_jax.mask_sparsity(rigl_jax.get_masks(opt_state))
print(f'global sparsity {float(sparsity["global"]):.3f}; every block kept '
      'its nonzero count through', STEPS * 3 // 4 // 25, 'mask updates')
