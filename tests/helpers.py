"""Small shared pieces for the core tests: a tiny MLP and its training loop."""

import os

import jax
import jax.numpy as jnp
import optax


def mlp_params(key=0, sizes=(12, 24, 16, 4)):
  keys = jax.random.split(jax.random.PRNGKey(key), len(sizes))
  params = {}
  for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
    params[f'Dense_{i}'] = {
        'kernel': jax.random.normal(keys[i], (a, b)) / jnp.sqrt(a),
        'bias': jnp.zeros((b,)),
    }
  return params


def mlp_apply(params, x):
  n = len(params)
  for i in range(n):
    x = x @ params[f'Dense_{i}']['kernel'] + params[f'Dense_{i}']['bias']
    if i < n - 1:
      x = jax.nn.relu(x)
  return x


def loss_fn(params, batch):
  x, y = batch
  logits = mlp_apply(params, x)
  return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()


def batch(step, n=32, d=12, classes=4):
  k = jax.random.PRNGKey(1000 + step)
  x = jax.random.normal(k, (n, d))
  y = (jnp.sum(x[:, :4], axis=1) > 0).astype(jnp.int32) + 2 * (x[:, 5] > 0)
  return x, y % classes


def make_step(tx):
  @jax.jit
  def step(params, state, b):
    grads = jax.grad(loss_fn)(params, b)
    updates, state = tx.update(grads, state, params)
    return optax.apply_updates(params, updates), state
  return step


def nnz_tree(masks):
  return jax.tree.map(lambda m: None if m is None else int(m.sum()), masks,
                      is_leaf=lambda x: x is None)


def with_train_batches(get_data, fn):
  """Wraps a `rigl_jax.experiment.data.get_data` so that every train batch goes through
  ``fn(index, batch) -> batch`` (``index``: 0-based position in the stream;
  ``fn`` may raise to simulate a crash there)."""

  def wrapped(*args, **kwargs):
    d = get_data(*args, **kwargs)

    def batches(start):
      for i, b in enumerate(d.train_batches(start)):
        yield fn(start + i, b)
    return d._replace(train_batches=batches)

  return wrapped


# The repository root (main.py, configs/, experiments/).
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
