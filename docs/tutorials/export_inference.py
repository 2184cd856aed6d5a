"""Tutorial 5: export a sparse model and run it sparsely on a CPU.

Trains the zoo's MLP (784-1024-1024-10) for one epoch with SRigL at 90%
(ERK; every output unit keeps the same number of inputs), exports it, loads
it back bit for bit, and runs it with `rigl_jax.deploy.sparse_inference`:
SRigL's kernels are stored condensed (values and input indices per unit),
which a compiled gather kernel multiplies faster than the dense model.
The same export of a RigL model uses CSR or a bitmask.

A finished `main.py` run is exported the same way from the command line:
``python -m rigl_jax.deploy --workdir DIR``.

Run: python docs/tutorials/export_inference.py   (about a minute)
"""

import os
import tempfile
import time

import jax
import numpy as np
import optax

import rigl_jax
from rigl_jax.deploy import export
from rigl_jax.deploy import sparse_inference
from rigl_jax.experiment import models
from rigl_jax.experiment.data import fashion_mnist

STEPS, BATCH = 468, 128
images, labels = fashion_mnist.load('train')
x_train = fashion_mnist.normalize(images)
test_images, test_labels = fashion_mnist.load('test')
x_test = fashion_mnist.normalize(test_images)

model = models.get_model('mlp', num_classes=10, hidden_sizes=(1024, 1024))
tx = rigl_jax.srigl(optax.sgd(0.05, momentum=0.9), sparsity=0.9,
                    distribution='erk', update_freq=50, end_step=350)
params = model.init(jax.random.PRNGKey(0), x_train[:1], train=False)[
    'params']
params, opt_state = rigl_jax.masked_init(tx, params)


@jax.jit
def train_step(params, opt_state, x, y):
  def loss_fn(params):
    logits = model.apply({'params': params}, x, train=True)
    return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
  grads = jax.grad(loss_fn)(params)
  updates, opt_state = tx.update(grads, opt_state, params)
  return optax.apply_updates(params, updates), opt_state


rng = np.random.default_rng(0)
for _ in range(STEPS):
  idx = rng.integers(0, len(x_train), BATCH)
  params, opt_state = train_step(params, opt_state, x_train[idx],
                                 labels[idx])

# Export: only the nonzeros, with the model's name for sparse_inference.
path = os.path.join(tempfile.mkdtemp(), 'model.npz')
summary = export.export(path, jax.device_get(params),
                        masks=rigl_jax.get_masks(opt_state),
                        metadata={'model': {'name': 'mlp'}})
for name, leaf in summary.leaves.items():
  print(f'  {name}: {leaf.encoding}')
print(f'file {summary.file_bytes / 2**20:.2f} MiB, dense '
      f'{summary.dense_bytes / 2**20:.2f} MiB')

# The Flax variables come back bit for bit.
restored = export.load(path)['params']
assert all(np.array_equal(a, b) for a, b in zip(
    jax.tree.leaves(restored), jax.tree.leaves(jax.device_get(params))))

# Sparse inference: numpy in, numpy out, the Flax model's layouts.
sparse_model = sparse_inference.load(path)
print(sparse_model)
dense_apply = jax.jit(lambda p, x: model.apply({'params': p}, x, train=False))
logits = sparse_model(x_test)
np.testing.assert_allclose(logits, dense_apply(params, x_test), rtol=1e-4,
                           atol=1e-4)
accuracy = float(np.mean(np.argmax(logits, -1) == test_labels))
print(f'test accuracy from the sparse model: {accuracy:.4f}')


def best_of(fn, n=200):
  fn()
  times = []
  for _ in range(5):
    start = time.perf_counter()
    for _ in range(n):
      fn()
    times.append((time.perf_counter() - start) / n)
  return min(times)


one = x_test[:1]
dense_s = best_of(lambda: jax.block_until_ready(dense_apply(params, one)))
sparse_s = best_of(lambda: sparse_model(one))
print(f'batch 1: dense {dense_s * 1e3:.3f} ms, sparse {sparse_s * 1e3:.3f} '
      f'ms ({dense_s / sparse_s:.1f}x)')
assert accuracy > 0.75
