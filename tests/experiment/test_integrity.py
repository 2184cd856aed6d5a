"""Checkpoint fingerprints (rigl_jax.experiment.integrity)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rigl_jax.experiment import integrity


@pytest.mark.parametrize('dtype', ['float32', 'bfloat16', 'int32', 'uint8',
                                   'bool'])
def test_every_single_bit_flip_changes_the_fingerprint(dtype):
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.normal(size=(3, 7)) * 100).astype(dtype)
  base = integrity._leaf_sums(x)
  # The sums see the entries as 32-bit words (one per entry here): flip
  # each bit an entry of this dtype has, one at a time.
  words = integrity._words(x).reshape(x.shape)
  bits = 1 if dtype == 'bool' else jnp.dtype(dtype).itemsize * 8
  i, b = np.divmod(np.arange(x.size * bits), bits)

  @jax.jit
  @jax.vmap
  def flipped_sums(i, b):
    flat = words.reshape(-1)
    flat = flat.at[i].set(flat[i] ^ (jnp.uint32(1) << b.astype(jnp.uint32)))
    return integrity._leaf_sums(flat.reshape(x.shape))

  np.testing.assert_array_equal(integrity._leaf_sums(words), base)
  sums = np.asarray(flipped_sums(i, b))
  assert not np.any(np.all(sums == np.asarray(base), axis=1))


def test_same_values_same_fingerprint_and_order_matters():
  a = {'w': jnp.arange(12.0).reshape(3, 4), 'm': jnp.ones(5, jnp.uint8)}
  assert integrity.fingerprint(a) == integrity.fingerprint(
      jax.tree.map(jnp.copy, a))
  # A transposed copy of the same numbers is not the same leaf.
  b = {'w': jnp.arange(12.0).reshape(4, 3).T.reshape(3, 4),
       'm': jnp.ones(5, jnp.uint8)}
  assert integrity.fingerprint(a) != integrity.fingerprint(b)
  assert integrity.fingerprint({}) == []
