"""rigl_jax.experiment.checkpoints: packed masks, checksums, config comparison."""


import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp

import rigl_jax
from rigl_jax.experiment import checkpoints
from tests import helpers


def _state():
  tx = rigl_jax.rigl(optax.sgd(0.1, momentum=0.9), sparsity=0.7,
                     end_step=100)
  params, opt_state = rigl_jax.masked_init(tx, helpers.mlp_params())
  return {'params': params, 'opt_state': opt_state}


def test_masks_are_stored_bit_packed_and_restore_exactly(tmp_path):
  state = _state()
  ck = checkpoints.Checkpoints(str(tmp_path), {'a': 1})
  ck.save(3, state)
  ck.close()
  # On disk: each mask is uint8 with one bit per weight.
  raw = ocp.StandardCheckpointer().restore(str(tmp_path / '3' / 'state'))
  masks = rigl_jax.get_masks(state['opt_state'])
  for packed, mask in zip(
      jax.tree.leaves(raw['opt_state']['masks']), jax.tree.leaves(masks)):
    assert packed.dtype == np.uint8
    assert packed.size == (mask.size + 7) // 8
  restored, step = checkpoints.Checkpoints(str(tmp_path), {'a': 1}).restore(
      state)
  assert step == 3
  for a, b in zip(jax.tree.leaves(state), jax.tree.leaves(restored)):
    assert a.dtype == b.dtype
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_no_checkpoint_returns_the_target(tmp_path):
  state = _state()
  out, step = checkpoints.Checkpoints(str(tmp_path / 'c'), {}).restore(state)
  assert step == 0 and out is state


def test_checksum_sees_every_bit():
  state = _state()
  base = checkpoints.state_checksum(state)
  assert base == checkpoints.state_checksum(jax.tree.map(jnp.copy, state))
  flipped = jax.tree.map(lambda x: x, state)
  k = flipped['params']['Dense_0']['kernel']
  flipped['params']['Dense_0']['kernel'] = k.at[0, 0].set(
      np.nextafter(np.float32(k[0, 0]), np.float32(np.inf)))
  assert checkpoints.state_checksum(flipped) != base


def test_config_differences_ignores_operational_fields():
  a = {'seed': 0, 'log_every_steps': 10, 'mesh': {'data': -1},
       'sparsity': {'sparsity': 0.9, 'method': 'rigl'}}
  b = {'seed': 0, 'log_every_steps': 50, 'mesh': {'data': 4, 'model': 2},
       'sparsity': {'sparsity': 0.8, 'method': 'rigl', 'structure': '2:4'}}
  assert checkpoints.config_differences(a, b) == [
      'sparsity.sparsity: 0.9 -> 0.8',
      "sparsity.structure: 'unstructured' -> '2:4'"]
  assert checkpoints.config_differences(a, a) == []


def test_unfinished_write_is_removed_on_open(tmp_path):
  state = _state()
  ck = checkpoints.Checkpoints(str(tmp_path), {})
  ck.save(1, state)
  ck.close()
  partial = tmp_path / '2.orbax-checkpoint-tmp-123'
  partial.mkdir()
  (partial / 'junk').write_text('x')
  ck = checkpoints.Checkpoints(str(tmp_path), {})
  assert not partial.exists() and ck.all_steps() == [1]
  ck.close()


def test_configs_written_before_a_field_was_declared_still_resume():
  """Checkpoints of configs that predate a declared `sparsify` field (e.g.
  `stacked`, `erk_power_scale`) resume under a config that sets the core's
  default for it; any other value is a difference."""
  old = {'sparsity': {'method': 'rigl', 'sparsity': 0.9}}
  new = {'sparsity': {'method': 'rigl', 'sparsity': 0.9, 'stacked': None,
                      'erk_power_scale': 1.0, 'snfs_momentum': 0.9,
                      'pruning_scope': 'layer'}}
  assert checkpoints.config_differences(old, new) == []
  assert checkpoints.config_differences(new, old) == []
  new['sparsity']['erk_power_scale'] = 2.0
  assert checkpoints.config_differences(old, new) == [
      'sparsity.erk_power_scale: 1.0 -> 2.0']
