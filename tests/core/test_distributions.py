"""Per-layer sparsity distributions (rigl_jax.distributions)."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import rigl_jax
from rigl_jax import distributions


def _resnetish():
  """Kernels of very different shapes plus dense leaves."""
  return {
      'conv_init': {'kernel': jnp.zeros((7, 7, 3, 64))},
      'conv1': {'kernel': jnp.zeros((3, 3, 64, 64)), 'bias': jnp.zeros(64)},
      'conv2': {'kernel': jnp.zeros((1, 1, 64, 256))},
      'conv3': {'kernel': jnp.zeros((3, 3, 256, 256))},
      'bn': {'scale': jnp.ones(256)},
      'head': {'kernel': jnp.zeros((256, 10)), 'bias': jnp.zeros(10)},
  }


def _global_sparsity(params, sps):
  zeros = total = 0
  for p, s, f in zip(jax.tree.leaves(params), jax.tree.leaves(sps),
                     jax.tree.leaves(rigl_jax.paths.sparse_leaf_flags(params))):
    if f:
      zeros += distributions.num_zeros(p.shape, s)
      total += p.size
  return zeros / total


@pytest.mark.parametrize('distribution', ['uniform', 'erk', 'er'])
@pytest.mark.parametrize('sparsity', [0.5, 0.8, 0.9, 0.95])
def test_hits_global_target(distribution, sparsity):
  params = _resnetish()
  sps = rigl_jax.sparsity_distribution(params, sparsity, distribution)
  assert _global_sparsity(params, sps) == pytest.approx(sparsity, abs=1e-4)
  # Dense leaves get 0.
  assert sps['conv1']['bias'] == 0.0 and sps['bn']['scale'] == 0.0


def test_uniform_is_floor_per_layer():
  params = _resnetish()
  sps = rigl_jax.sparsity_distribution(params, 0.9, 'uniform')
  assert sps['head']['kernel'] == 0.9
  assert distributions.num_zeros((256, 10), 0.9) == 2304
  assert distributions.num_zeros((7, 3), 0.7) == math.floor(0.7 * 21 + 1e-9)


def test_erk_density_proportional_to_kernel_dims():
  params = _resnetish()
  sps = rigl_jax.sparsity_distribution(params, 0.9, 'erk')
  dens = {k: 1 - v['kernel'] for k, v in sps.items() if 'kernel' in v}
  raw = {k: sum(v['kernel'].shape) / v['kernel'].size
         for k, v in params.items() if 'kernel' in v}
  sparse_layers = [k for k in dens if dens[k] < 1.0]
  ratios = [dens[k] / raw[k] for k in sparse_layers]
  np.testing.assert_allclose(ratios, ratios[0], rtol=1e-9)
  # Smaller layers are denser.
  assert dens['head'] > dens['conv3'] and dens['conv_init'] > dens['conv3']


def test_erk_makes_small_layers_dense_and_rescales():
  params = {'tiny': jnp.zeros((3, 4)), 'big': jnp.zeros((400, 500))}
  sps = rigl_jax.sparsity_distribution(params, 0.5, 'erk')
  assert sps['tiny'] == 0.0
  assert _global_sparsity(params, sps) == pytest.approx(0.5, abs=1e-5)


def test_er_uses_last_two_dims():
  params = {'a': jnp.zeros((3, 3, 16, 32)), 'b': jnp.zeros((64, 64))}
  sps = rigl_jax.sparsity_distribution(params, 0.8, 'er')
  ra = (16 + 32) / (16 * 32)
  rb = (64 + 64) / (64 * 64)
  assert (1 - sps['a']) / (1 - sps['b']) == pytest.approx(ra / rb)


def test_custom_sparsity_overrides_and_leaves_budget():
  params = _resnetish()
  sps = rigl_jax.sparsity_distribution(
      params, 0.9, 'erk', custom_sparsity={'conv_init/kernel': 0.0})
  assert sps['conv_init']['kernel'] == 0.0
  rest = {k: v for k, v in params.items() if k != 'conv_init'}
  sps_rest = rigl_jax.sparsity_distribution(rest, 0.9, 'erk')
  assert sps['conv3']['kernel'] == pytest.approx(sps_rest['conv3']['kernel'])
  # Regex keys work too.
  sps2 = rigl_jax.sparsity_distribution(
      params, 0.9, 'uniform', custom_sparsity={r'conv\d/kernel': 0.5})
  assert sps2['conv1']['kernel'] == sps2['conv3']['kernel'] == 0.5
  assert sps2['head']['kernel'] == 0.9


def test_is_sparse_regex_and_predicate():
  params = _resnetish()
  sps = rigl_jax.sparsity_distribution(params, 0.9, 'uniform',
                                       is_sparse=[r'^conv\d'])
  assert sps['conv_init']['kernel'] == 0.0 and sps['head']['kernel'] == 0.0
  assert sps['conv1']['kernel'] == 0.9
  sps = rigl_jax.sparsity_distribution(
      params, 0.9, 'uniform', is_sparse=lambda path, x: path.startswith('head'))
  assert sps['head']['kernel'] == 0.9 and sps['conv1']['kernel'] == 0.0


def test_erk_power_scale_zero_is_uniform():
  params = _resnetish()
  sps = rigl_jax.sparsity_distribution(params, 0.8, 'erk', erk_power_scale=0.0)
  for v in jax.tree.leaves(sps):
    assert v in (0.0, pytest.approx(0.8))


@pytest.mark.parametrize('kwargs, match', [
    (dict(sparsity=1.0), r'\[0, 1\)'),
    (dict(sparsity=-0.1), r'\[0, 1\)'),
    (dict(sparsity=0.5, distribution='gaussian'), "valid choices are"),
    (dict(sparsity=0.5, custom_sparsity={'nope/kernel': 0.1}),
     'matches no sparse leaf'),
])
def test_bad_input(kwargs, match):
  with pytest.raises(ValueError, match=match):
    rigl_jax.sparsity_distribution(_resnetish(), **kwargs)


def test_erk_unreachable():
  # ERK would leave the small layer without a single weight.
  params = {'a': jnp.zeros((2, 2)), 'b': jnp.zeros((3000, 3000))}
  with pytest.raises(ValueError, match=r"cannot reach.*\['a'\]"):
    rigl_jax.sparsity_distribution(params, 0.9999, 'erk')
  # The same target is fine when that layer is given its own sparsity.
  sps = rigl_jax.sparsity_distribution(params, 0.9999, 'erk',
                                       custom_sparsity={'a': 0.5})
  assert sps['a'] == 0.5
