"""Tutorial 1: RigL in your own Flax training loop (linen + TrainState, nnx).

Trains a 784-300-100-10 MLP on the bundled Fashion-MNIST at 90% sparsity
(ERK) with RigL twice: a linen model with `flax.training.train_state`, and
the same model in `flax.nnx` with `nnx.Optimizer`. Nothing from the
experiment system is used but the bundled data.

Run: python docs/tutorials/own_loop.py   (about a minute on 2 CPU cores)
"""

import flax.linen as nn
from flax import nnx
from flax.training import train_state
import jax
import jax.numpy as jnp
import numpy as np
import optax

import rigl_jax
from rigl_jax.experiment.data import fashion_mnist

STEPS, BATCH = 600, 128
images, labels = fashion_mnist.load('train')
test_images, test_labels = fashion_mnist.load('test')
x_train = fashion_mnist.normalize(images).reshape(len(images), -1)
x_test = fashion_mnist.normalize(test_images).reshape(len(test_images), -1)


def batches(seed):
  rng = np.random.default_rng(seed)
  for _ in range(STEPS):
    idx = rng.integers(0, len(x_train), BATCH)
    yield x_train[idx], labels[idx]


def make_tx():
  """SGD with momentum inside RigL: sparsify goes last in any chain."""
  schedule = optax.cosine_decay_schedule(0.1, STEPS)
  return rigl_jax.rigl(optax.sgd(schedule, momentum=0.9, nesterov=True),
                       sparsity=0.9, distribution='erk', update_freq=50,
                       end_step=int(0.75 * STEPS))


# --- linen + TrainState ------------------------------------------------------
class MLP(nn.Module):

  @nn.compact
  def __call__(self, x):
    x = nn.relu(nn.Dense(300)(x))
    x = nn.relu(nn.Dense(100)(x))
    return nn.Dense(10)(x)


model = MLP()
tx = make_tx()
params = model.init(jax.random.PRNGKey(0), x_train[:1])['params']
params, opt_state = rigl_jax.masked_init(tx, params)  # sparse from step 0
state = train_state.TrainState(step=0, apply_fn=model.apply, params=params,
                               tx=tx, opt_state=opt_state)


@jax.jit
def train_step(state, x, y):
  def loss_fn(params):
    logits = state.apply_fn({'params': params}, x)
    return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
  loss, grads = jax.value_and_grad(loss_fn)(state.params)
  return state.apply_gradients(grads=grads), loss


for x, y in batches(0):
  state, loss = train_step(state, x, y)

masks = rigl_jax.get_masks(state.opt_state)  # a bool array per kernel
accuracy = float(jnp.mean(jnp.argmax(
    model.apply({'params': state.params}, x_test), -1) == test_labels))
sparsity = rigl_jax.mask_sparsity(masks)  # per layer, and 'global'
print(f'linen + TrainState: loss {float(loss):.3f}, test accuracy '
      f'{accuracy:.4f}, global sparsity {float(sparsity["global"]):.3f}')
for path, mask in jax.tree_util.tree_leaves_with_path(masks):
  kernel = state.params[path[0].key][path[1].key]
  # The weights outside the mask are exactly zero.
  assert int(jnp.count_nonzero(kernel * ~mask)) == 0
  print(f'  {rigl_jax.path_str(path)}: sparsity '
        f'{float(sparsity[rigl_jax.path_str(path)]):.3f}')


# --- nnx + nnx.Optimizer -----------------------------------------------------
class NnxMLP(nnx.Module):

  def __init__(self, rngs):
    self.dense0 = nnx.Linear(784, 300, rngs=rngs)
    self.dense1 = nnx.Linear(300, 100, rngs=rngs)
    self.head = nnx.Linear(100, 10, rngs=rngs)

  def __call__(self, x):
    return self.head(nnx.relu(self.dense1(nnx.relu(self.dense0(x)))))


nnx_model = NnxMLP(nnx.Rngs(0))
optimizer = nnx.Optimizer(nnx_model, make_tx(), wrt=nnx.Param)
# Mask the freshly initialised weights once, as masked_init does for linen.
nnx.update(nnx_model, rigl_jax.apply_masks(
    nnx.state(nnx_model, nnx.Param), rigl_jax.get_masks(optimizer.opt_state)))


@nnx.jit
def nnx_step(model, optimizer, x, y):
  def loss_fn(model):
    return optax.softmax_cross_entropy_with_integer_labels(
        model(x), y).mean()
  loss, grads = nnx.value_and_grad(loss_fn)(model)
  optimizer.update(model, grads)
  return loss


for x, y in batches(1):
  loss = nnx_step(nnx_model, optimizer, x, y)

accuracy = float(jnp.mean(jnp.argmax(nnx_model(x_test), -1) == test_labels))
sparsity = float(rigl_jax.mask_sparsity(
    rigl_jax.get_masks(optimizer.opt_state))['global'])
print(f'nnx: loss {float(loss):.3f}, test accuracy {accuracy:.4f}, global '
      f'sparsity {sparsity:.3f}')
assert accuracy > 0.75 and abs(sparsity - 0.9) < 1e-3
