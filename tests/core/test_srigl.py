"""SRigL (Lasby et al. 2024): constant fan-in RigL with neuron ablation."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import rigl_jax
from rigl_jax.methods import srigl
from tests import helpers


def _update(w, g, m, fraction, sparsity, gamma):
  return np.asarray(jax.jit(
      lambda w, g, m: srigl.update_layer(w, g, m, jnp.float32(fraction),
                                         sparsity, gamma))(w, g, m))


def test_hand_computed_drop_and_per_neuron_regrowth():
  # A dense kernel (in=4, out=3), 2 inputs per neuron (sparsity 0.5).
  w = np.array([[0.9, 0.0, 0.05], [0.1, 0.5, 0.0], [0.0, 0.4, 0.0],
                [0.0, 0.0, 0.8]], np.float32)
  m = w != 0
  g = np.array([[0.0, 0.3, 0.9], [0.2, 0.0, 0.2], [0.7, 0.1, 0.3],
                [0.1, 0.6, 0.0]], np.float32)
  # f = 0.5 of 6: drop 3, keep the layer's 3 largest |w| (0.9, 0.8, 0.5);
  # then each neuron grows its largest |g| outside what it kept back to 2:
  # neuron 0 row 2 (0.7), neuron 1 row 3 (0.6), neuron 2 row 0 (0.9, the
  # weight it just dropped).
  want = np.array([[1, 0, 1], [0, 1, 0], [1, 0, 0], [0, 1, 1]], bool)
  np.testing.assert_array_equal(_update(w, g, m, 0.5, 0.5, 0.0), want)


def test_hand_computed_ablation_redistributes_the_budget():
  # in=6, out=4 at sparsity 0.5: budget 12, k = 3 per neuron.
  rng = np.random.default_rng(0)
  m = np.zeros((6, 4), bool)
  for j in range(4):
    m[rng.permutation(6)[:3], j] = True
  w = np.where(m, rng.uniform(0.5, 1.0, (6, 4)), 0.0).astype(np.float32)
  g = rng.uniform(0.5, 1.0, (6, 4)).astype(np.float32)
  w[:, 3] *= 1e-3  # neuron 3: tiny weights and gradients, nothing salient
  g[:, 3] *= 1e-3
  # f = 0.25: n_prune 3, n_keep 9 -> neurons 0-2 hold the 9 largest |w| and
  # the 3 largest |g|. gamma = 1 (an absolute count): neuron 3 has 0 < 1
  # salient weights and is ablated; B // fan_in = 2 neurons must live.
  new = _update(w, g, m, 0.25, 0.5, 1.0)
  assert new[:, 3].sum() == 0
  # The budget goes to the 3 live neurons: k' = 12 // 3 = 4 each, their 9
  # kept weights and 3 grown by |g|.
  np.testing.assert_array_equal(new.sum(0), [4, 4, 4, 0])
  assert (new & m)[:, :3].sum() == 9
  # Without ablation (gamma 0) the neuron stays, with 3 inputs each.
  np.testing.assert_array_equal(_update(w, g, m, 0.25, 0.5, 0.0).sum(0),
                                [3, 3, 3, 3])


def _oracle(w, g, m, fraction, sparsity, gamma):
  """The authors' rule (rigl_constant_fan.py:235-622) in numpy, neuron
  rows (the cap keeps the largest |w|, the reference's intent)."""
  w, g, m = np.abs(w).T, np.abs(g).T, m.T  # (n_out, fan_in)
  n_out, fan = m.shape
  numel = m.size
  budget = numel - math.floor(sparsity * numel + 1e-9)
  nnz = int(m.sum())
  n_prune = int(np.float32(fraction) * np.float32(nnz))
  n_keep = nnz - n_prune
  sw = np.where(m, w, 0.0)
  dead = np.zeros(n_out, bool)
  if gamma:
    sal = np.zeros(numel, bool)
    sal[np.argsort(-sw.ravel(), kind='stable')[:n_keep]] = True
    sal[np.argsort(-g.ravel(), kind='stable')[:n_prune]] = True
    count = sal.reshape(n_out, fan).sum(1)
    thr = int(gamma) if gamma >= 1 else max(1, int(gamma * (budget // n_out)))
    min_neurons = budget // fan
    if min_neurons < n_out:
      thr = min(thr, np.sort(count)[::-1][min_neurons])
    dead = count < thr
  k = budget // (n_out - dead.sum())
  cand = np.where(m & ~dead[:, None], sw, -1.0).ravel()
  keep = np.zeros(numel, bool)
  keep[np.argsort(-cand, kind='stable')[:n_keep]] = True
  keep = keep.reshape(n_out, fan) & m & ~dead[:, None]
  new = np.zeros_like(m)
  for i in range(n_out):
    if dead[i]:
      continue
    kept = np.flatnonzero(keep[i])
    kept = kept[np.argsort(-sw[i, kept], kind='stable')][:k]
    new[i, kept] = True
    free = np.flatnonzero(~new[i])
    grow = free[np.argsort(-g[i, free], kind='stable')][:k - len(kept)]
    new[i, grow] = True
  return new.T


@pytest.mark.parametrize('seed', [0, pytest.param(1, marks=pytest.mark.slow),
                                  pytest.param(2, marks=pytest.mark.slow),
                                  pytest.param(3, marks=pytest.mark.slow)])
@pytest.mark.parametrize('gamma', [0.0, 0.3, 0.95])
def test_matches_the_reference_rule(seed, gamma):
  rng = np.random.default_rng(seed)
  fan, n_out, sparsity = 12, 10, 0.75  # k = 3
  m = np.zeros((fan, n_out), bool)
  for j in range(n_out):
    m[rng.permutation(fan)[:3], j] = True
  # Some neurons weak (ablation candidates), continuous values (no ties).
  scale = np.where(rng.uniform(size=n_out) < 0.3, 1e-2, 1.0)
  w = np.where(m, rng.normal(size=(fan, n_out)) * scale, 0.0).astype(
      np.float32)
  g = (rng.normal(size=(fan, n_out)) * scale).astype(np.float32)
  fraction = rng.uniform(0.1, 0.5)
  np.testing.assert_array_equal(
      _update(w, g, m, fraction, sparsity, gamma),
      _oracle(w, g, m, fraction, sparsity, gamma))


def test_constant_fan_in_over_many_updates_in_a_training_loop():
  params = helpers.mlp_params(sizes=(12, 24, 16, 4))
  sparsities = rigl_jax.sparsity_distribution(params, 0.8, 'erk')
  tx = rigl_jax.srigl(optax.adam(3e-2), sparsity=0.8, update_freq=2,
                      end_step=60, srigl_min_salient=0.5)
  params, state = rigl_jax.masked_init(tx, params)
  for k, m in rigl_jax.get_masks(state).items():
    m = np.asarray(m['kernel'])
    budget = srigl.layer_budget(m.shape, sparsities[k]['kernel'])
    np.testing.assert_array_equal(m.sum(0), budget // m.shape[-1])
  step = helpers.make_step(tx)
  churn, ablated = 0.0, 0
  for t in range(60):
    params, state = step(params, state, helpers.batch(t))
    churn += float(rigl_jax.get_sparse_state(state).mask_churn)
    for k, m in rigl_jax.get_masks(state).items():
      m = np.asarray(m['kernel'])
      counts = m.sum(0)
      live = int((counts > 0).sum())
      ablated += m.shape[-1] - live
      # Every live neuron has k' = B // live inputs.
      budget = srigl.layer_budget(m.shape, sparsities[k]['kernel'])
      np.testing.assert_array_equal(counts[counts > 0], budget // live,
                                    err_msg=f'{k} at step {t}')
      # Weights outside the mask are exactly zero.
      assert not np.any(np.asarray(params[k]['kernel'])[~m])
  assert churn > 0
  assert ablated > 0  # gamma 0.5 ablates some neurons of this small MLP


def test_srigl_refuses_an_nm_structure():
  with pytest.raises(ValueError, match='constant fan-in'):
    rigl_jax.srigl(optax.sgd(0.1), sparsity=0.5, end_step=10,
                   structure='2:4').init({'w': jnp.ones((8, 4))})
