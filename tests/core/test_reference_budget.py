"""``sparsity_budget='reference'``: the official ERK budget and zero counts.

The reference below follows google-research/rigl rigl/sparse_utils.py,
`get_sparsities_erdos_renyi` (lines 90-207) and `get_n_zeros` (35-36),
written out with numpy for a list of layer shapes.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import rigl_jax
from rigl_jax import distributions


def _reference_erk(shapes, default_sparsity, custom, include_kernel=True,
                   power=1.0):
  """The official per-layer sparsities, {name: sparsity}."""
  get_n_zeros = lambda size, s: int(np.floor(s * size))
  dense_layers = set()
  while True:
    divisor, rhs, raw = 0, 0, {}
    for name, shape in shapes.items():
      n_param = np.prod(shape)
      n_zeros = get_n_zeros(n_param, default_sparsity)
      if name in dense_layers:
        rhs -= n_zeros
      elif name in custom:
        pass
      else:
        rhs += n_param - n_zeros
        if include_kernel:
          raw[name] = (np.sum(shape) / np.prod(shape))**power
        else:
          n_in, n_out = shape[-2:]
          raw[name] = (n_in + n_out) / (n_in * n_out)
        divisor += raw[name] * n_param
    eps = rhs / divisor
    max_prob = np.max(list(raw.values()))
    if max_prob * eps > 1:
      dense_layers.update(n for n, p in raw.items() if p == max_prob)
    else:
      break
  return {n: (custom[n] if n in custom else 0.0 if n in dense_layers
              else 1.0 - eps * raw[n]) for n in shapes}


def _resnet50_kernels():
  """Every ResNet-50 (v1.5) conv and dense kernel: {path: HWIO shape}."""
  shapes = {'conv_init/kernel': (7, 7, 3, 64)}
  cin = 64
  for stage, (blocks, width) in enumerate(zip((3, 4, 6, 3),
                                              (64, 128, 256, 512))):
    for b in range(blocks):
      p = f'block{stage}_{b}'
      shapes[f'{p}/conv1/kernel'] = (1, 1, cin, width)
      shapes[f'{p}/conv2/kernel'] = (3, 3, width, width)
      shapes[f'{p}/conv3/kernel'] = (1, 1, width, 4 * width)
      if b == 0:
        shapes[f'{p}/proj/kernel'] = (1, 1, cin, 4 * width)
      cin = 4 * width
  shapes['head/kernel'] = (2048, 1000)
  return shapes


def _tree(shapes):
  out = {}
  for path, shape in shapes.items():
    node = out
    *parents, leaf = path.split('/')
    for p in parents:
      node = node.setdefault(p, {})
    node[leaf] = jax.ShapeDtypeStruct(shape, jnp.float32)
  return out


def _flat(tree):
  return {rigl_jax.path_str(p): v
          for p, v in jax.tree_util.tree_flatten_with_path(tree)[0]}


@pytest.mark.parametrize('sparsity', [0.5, 0.8, 0.9, 0.95, 0.99])
@pytest.mark.parametrize('custom', [{}, {'conv_init/kernel': 0.0}])
def test_reference_budget_reproduces_the_official_erk_on_resnet50(
    sparsity, custom):
  shapes = _resnet50_kernels()
  want = _reference_erk(shapes, sparsity, custom)
  got = _flat(distributions.sparsity_distribution(
      _tree(shapes), sparsity, 'erk', custom_sparsity=custom or None,
      sparsity_budget='reference'))
  assert set(got) == set(want)
  for name in shapes:
    assert abs(got[name] - want[name]) <= 1e-12, (name, got[name], want[name])


def test_reference_er_ignores_the_power_scale():
  shapes = {'a/kernel': (30, 20), 'b/kernel': (20, 10)}
  want = _reference_erk(shapes, 0.8, {}, include_kernel=False)
  got = _flat(distributions.sparsity_distribution(
      _tree(shapes), 0.8, 'er', erk_power_scale=0.5,
      sparsity_budget='reference'))
  for name in shapes:
    assert abs(got[name] - want[name]) <= 1e-12


def test_reference_budget_masks_hold_floor_s_n_zeros():
  # 0.7 * 90 is 62.99999999999999 in float64: the reference truncates it to
  # 62 zeros; the exact budget reads it as 63.
  params = {'w': jnp.ones((9, 10)), 'v': jnp.ones((4, 25))}
  for budget, zeros in (('reference', 62), ('exact', 63)):
    tx = rigl_jax.sparsify(optax.sgd(0.1), 'static', sparsity=0.7,
                           distribution='uniform', sparsity_budget=budget)
    _, state = rigl_jax.masked_init(tx, params)
    m = np.asarray(rigl_jax.get_masks(state)['w'])
    assert m.size - m.sum() == zeros
  with pytest.raises(ValueError, match='sparsity_budget'):
    rigl_jax.sparsify(optax.sgd(0.1), 'static', sparsity=0.9,
                      sparsity_budget='official')
