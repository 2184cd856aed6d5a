"""Mesh sharding: 8 simulated CPU devices give the single-device result.

The multi-device checks run in a subprocess started with
``XLA_FLAGS=--xla_force_host_platform_device_count=8`` (the flag must be set
before JAX starts, and the rest of the suite runs on one device).
"""

import json
import os
import subprocess
import sys
import types

import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from rigl_jax.experiment import sharding
from tests import helpers

REPO = helpers.REPO
MESHES = {'8x1': (8, 1), '4x2': (4, 2), '1x1': (1, 1)}


def _fake_mesh(**shape):
  return types.SimpleNamespace(shape=shape)


def test_mesh_shape_resolves_minus_one_and_refuses_bad_sizes():
  assert sharding.mesh_shape({'data': -1, 'model': 2}, 8) == {
      'data': 4, 'model': 2}
  assert sharding.mesh_shape({'data': 2, 'model': 1}, 8) == {
      'data': 2, 'model': 1}
  with pytest.raises(ValueError, match="needs a 'data' axis"):
    sharding.mesh_shape({'model': 2}, 8)
  with pytest.raises(ValueError, match='not divisible'):
    sharding.mesh_shape({'data': -1, 'model': 3}, 8)
  with pytest.raises(ValueError, match='only 8 are available'):
    sharding.mesh_shape({'data': 16}, 8)
  with pytest.raises(ValueError, match='only one axis may be -1'):
    sharding.mesh_shape({'data': -1, 'model': -1}, 8)
  with pytest.raises(ValueError, match='positive integer or -1'):
    sharding.mesh_shape({'data': 0}, 8)


def test_param_spec_rules():
  mesh = _fake_mesh(data=4, model=2)
  # Kernels: output dimension along 'model'; biases replicated.
  assert sharding.param_spec('Dense_0/kernel', (784, 64), mesh) == P(
      None, 'model')
  assert sharding.param_spec('Dense_0/bias', (64,), mesh) == P(None)
  # Not divisible: stays whole.
  assert sharding.param_spec('Dense_2/kernel', (32, 5), mesh) == P(None, None)
  # FSDP: the largest remaining divisible dimension along 'data'.
  assert sharding.param_spec('Conv_0/kernel', (3, 3, 16, 64), mesh,
                             fsdp=True) == P(None, None, 'data', 'model')
  # Explicit rules first; a rule that does not divide is an error.
  rules = (('Dense_0/kernel', ('data', None)),)
  assert sharding.param_spec('Dense_0/kernel', (784, 64), mesh,
                             rules) == P('data', None)
  with pytest.raises(ValueError, match='not divisible'):
    sharding.param_spec('Dense_0/kernel', (785, 64), mesh, rules)
  with pytest.raises(ValueError, match='unknown mesh axis'):
    sharding.param_spec('Dense_0/kernel', (784, 64), mesh,
                        (('kernel', ('expert', None)),))


def test_transformer_heads_and_mlp_along_model_stack_axis_kept_whole():
  from rigl_jax.experiment import models  # pylint: disable=g-import-not-at-top
  mesh = _fake_mesh(data=4, model=2)
  dims = models.model_dims('transformer_lm')
  stacked = models.stacked_leaves('transformer_lm', {'scan_layers': True})

  def spec(path, shape, fsdp=False):
    return sharding.param_spec(path, shape, mesh, fsdp=fsdp,
                               model_dims=dims, stacked=stacked)

  # Unrolled: Q/K/V on the heads, O on the heads, fc1 out, fc2 in.
  assert spec('encoder/block0/attn/query/kernel', (64, 4, 16)) == P(
      None, 'model', None)
  assert spec('encoder/block0/attn/query/bias', (4, 16)) == P('model', None)
  assert spec('encoder/block0/attn/out/kernel', (4, 16, 64)) == P(
      'model', None, None)
  assert spec('encoder/block0/fc1/kernel', (64, 256)) == P(None, 'model')
  assert spec('encoder/block0/fc1/bias', (256,)) == P('model')
  assert spec('encoder/block0/fc2/kernel', (256, 64)) == P('model', None)
  assert spec('encoder/block0/ln1/scale', (64,)) == P(None)
  # Scanned: the same dimensions; FSDP never splits the layer axis (the
  # last case: without the stacked rule it splits the 8 layers).
  assert spec('encoder/blocks/attn/key/kernel', (8, 64, 4, 16), True) == P(
      None, 'data', 'model', None)
  assert spec('encoder/blocks/fc2/kernel', (8, 256, 4), True) == P(
      None, 'model', 'data')
  assert spec('encoder/blocks/fc1/bias', (8, 256), True) == P(None, 'model')
  assert sharding.param_spec('encoder/blocks/fc1/bias', (8, 256), mesh,
                             fsdp=True, model_dims=dims) == P('data', 'model')
  # Heads not divisible by the model axis: that leaf stays whole there.
  assert spec('encoder/block0/attn/query/kernel', (64, 3, 16)) == P(
      None, None, None)


def test_state_leaves_follow_their_parameter():
  import jax  # pylint: disable=g-import-not-at-top
  mesh = jax.sharding.Mesh(np.asarray(jax.devices()[:1]).reshape(1, 1),
                           ('data', 'model'))
  params = {'a': {'kernel': np.zeros((4, 6))}, 'b': {'kernel': np.zeros((6, 2))}}
  specs = {'a': {'kernel': P(None, 'model')}, 'b': {'kernel': P('data')}}
  state = {'params': params, 'opt': {'mu': params, 'count': np.zeros(())},
           'masks': {'a': {'kernel': np.zeros((4, 6), bool)},
                     'b': {'kernel': None}},
           'other': {'kernel': np.zeros((3,))}}
  out = sharding.state_shardings(state, params, specs, mesh)
  assert out['opt']['mu']['a']['kernel'].spec == P(None, 'model')
  assert out['opt']['mu']['b']['kernel'].spec == P('data')
  assert out['masks']['a']['kernel'].spec == P(None, 'model')
  assert out['opt']['count'].spec == P()
  assert out['other']['kernel'].spec == P()  # same name, other shape


def test_batch_not_divisible_by_the_data_axis_is_one_error():
  from rigl_jax.experiment import train  # pylint: disable=g-import-not-at-top
  from tests.runs import tiny_config  # pylint: disable=g-import-not-at-top
  config = tiny_config()
  config.data.batch_size = 100
  with pytest.raises(ValueError, match=r'config.data.batch_size = 100 is not '
                     r'divisible .* pick a multiple of 8'):
    train._data_axis_check(config, _fake_mesh(data=8, model=1))  # pylint: disable=protected-access


# --- 8 simulated devices, in a subprocess --------------------------------

def _worker(outdir: str) -> None:
  """Trains the tiny default experiment on three meshes and across a
  checkpoint written on 8x1 and resumed on 4x2; saves the final states."""
  import jax  # pylint: disable=g-import-not-at-top
  sys.path.insert(0, REPO)
  from rigl_jax.experiment import data as data_lib  # pylint: disable=g-import-not-at-top
  from rigl_jax.experiment import builders  # pylint: disable=g-import-not-at-top
  from rigl_jax.experiment import train  # pylint: disable=g-import-not-at-top
  from tests.runs import tiny_config  # pylint: disable=g-import-not-at-top
  assert jax.device_count() == 8, jax.devices()

  def config(mesh):
    # 12 steps, RigL mask updates at steps 0, 5 and 10, batch 64, LR cut so
    # float32 summation order matters little.
    c = tiny_config(steps=12, checkpoint_every_steps=6)
    c.data.batch_size = 64
    c.data.eval_batch_size = 400
    c.model.kwargs.hidden_sizes = (64, 32)
    c.mesh = {'data': mesh[0], 'model': mesh[1]}
    return c

  def dump(name, workdir, cfg):
    _dump(os.path.join(outdir, name + '.npz'), workdir, cfg)

  info = {}
  for name, mesh in MESHES.items():
    wd = os.path.join(outdir, name)
    res = train.train_and_evaluate(config(mesh), wd)
    info[name] = {'test_loss': res['test_loss'], 'mesh': res['mesh']}
    dump(name, wd, config(mesh))

  # Shardings on 4x2: kernels split along 'model', masks and momentum alike.
  c = config((4, 2))
  data, model, tx, _, _ = builders.build(c)
  mesh = train.sharding_lib.make_mesh(c.mesh)
  sh = builders.train_state_shardings(c, model, tx, data.info,
                                   jax.random.PRNGKey(0), mesh)
  k = sh.params['dense0']['kernel'].spec
  momentum = [s.spec for p, s in jax.tree_util.tree_flatten_with_path(
      sh.opt_state)[0] if 'dense0' in jax.tree_util.keystr(p)]
  info['specs'] = {'kernel': str(k), 'state': sorted({str(s) for s in
                                                      momentum})}

  # Written on 8x1 (stopped after step 6), resumed on 4x2.
  from tests import helpers  # pylint: disable=g-import-not-at-top
  real_get_data = data_lib.get_data

  def stop_at_8(index, b):
    if index == 8:
      raise RuntimeError('stop')
    return b

  stopping_get_data = helpers.with_train_batches(real_get_data, stop_at_8)

  wd = os.path.join(outdir, 'moved')
  train.data_lib.get_data = stopping_get_data
  try:
    train.train_and_evaluate(config((8, 1)), wd)
  except RuntimeError:
    pass
  train.data_lib.get_data = real_get_data
  res = train.train_and_evaluate(config((4, 2)), wd)
  info['moved'] = {'resumed_from_step': res['resumed_from_step'],
                   'test_loss': res['test_loss'], 'mesh': res['mesh']}
  dump('moved', wd, config((4, 2)))
  with open(os.path.join(outdir, 'info.json'), 'w', encoding='utf-8') as f:
    json.dump(info, f)


def _lm_worker(outdir: str) -> None:
  """A scanned transformer LM on 1x1 and on 4x2 with FSDP (heads and MLP
  units along 'model', the rest along 'data'); saves the final states."""
  import jax  # pylint: disable=g-import-not-at-top
  sys.path.insert(0, REPO)
  from rigl_jax.experiment import builders  # pylint: disable=g-import-not-at-top
  from rigl_jax.experiment import train  # pylint: disable=g-import-not-at-top
  from tests.runs import tiny_transformer_config  # pylint: disable=g-import-not-at-top
  assert jax.device_count() == 8, jax.devices()

  def config(mesh, fsdp):
    c = tiny_transformer_config(**{'log_every_steps': 2,
                                   'sharding.fsdp': fsdp})
    c.model.kwargs = {'embed_dim': 32, 'num_layers': 2, 'num_heads': 4,
                      'mlp_dim': 64, 'max_len': 64, 'scan_layers': True}
    c.mesh = {'data': mesh[0], 'model': mesh[1]}
    return c

  info = {}
  for name, mesh, fsdp in (('lm_1x1', (1, 1), False),
                           ('lm_4x2', (4, 2), True)):
    c = config(mesh, fsdp)
    wd = os.path.join(outdir, name)
    res = train.train_and_evaluate(c, wd)
    info[name] = {'test_loss': res['test_loss'], 'mesh': res['mesh']}
    _dump(os.path.join(outdir, name + '.npz'), wd, c)
  c = config((4, 2), True)
  exp = builders.build(c)
  sh = builders.train_state_shardings(c, exp.model, exp.tx, exp.data.info,
                                      jax.random.PRNGKey(0),
                                      train.sharding_lib.make_mesh(c.mesh))
  blocks = sh.params['encoder']['blocks']
  info['lm_specs'] = {'query': str(blocks['attn']['query']['kernel'].spec),
                      'fc2': str(blocks['fc2']['kernel'].spec)}
  with open(os.path.join(outdir, 'info.json'), 'w', encoding='utf-8') as f:
    json.dump(info, f)


def _dump(path, workdir, cfg):
  """The final params and masks of a run, as an .npz of keystr -> array."""
  import jax  # pylint: disable=g-import-not-at-top
  from rigl_jax.experiment import builders  # pylint: disable=g-import-not-at-top
  import rigl_jax  # pylint: disable=g-import-not-at-top
  state, _ = builders.restore_train_state(cfg, workdir)
  flat = jax.tree_util.tree_flatten_with_path(jax.device_get(
      {'params': state.params, 'masks': rigl_jax.get_masks(state.opt_state)}))[0]
  np.savez(path, **{jax.tree_util.keystr(p): np.asarray(x) for p, x in flat})


def _run_worker(mode: str, out) -> None:
  env = dict(os.environ, PYTHONPATH=REPO, XLA_FLAGS=(
      os.environ.get('XLA_FLAGS', '') +
      ' --xla_force_host_platform_device_count=8').strip())
  proc = subprocess.run([sys.executable, __file__, mode, str(out)], env=env,
                        capture_output=True, text=True, timeout=900,
                        cwd=REPO)
  assert proc.returncode == 0, proc.stderr[-3000:]


@pytest.fixture(scope='module')
def eight_devices(built_once):
  def build(out):
    _run_worker('mesh', out)

  out = built_once('eight_devices', build)
  with open(out / 'info.json', encoding='utf-8') as f:
    info = json.load(f)
  states = {name: dict(np.load(out / f'{name}.npz'))
            for name in list(MESHES) + ['moved']}
  return info, states


def _compare(a, b):
  assert a.keys() == b.keys()
  for key in a:
    if a[key].dtype == bool:  # masks: identical
      np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    else:
      np.testing.assert_allclose(a[key], b[key], rtol=2e-4, atol=2e-5,
                                 err_msg=key)


@pytest.mark.parametrize('mesh', ['8x1', '4x2'])
def test_meshes_give_the_single_device_masks_and_params(eight_devices, mesh):
  info, states = eight_devices
  assert info[mesh]['mesh'] == dict(zip(('data', 'model'), MESHES[mesh]))
  assert any(v.dtype == bool for v in states[mesh].values())
  _compare(states['1x1'], states[mesh])
  assert info[mesh]['test_loss'] == pytest.approx(info['1x1']['test_loss'],
                                                  rel=1e-4)


def test_model_axis_splits_kernels_masks_and_momentum(eight_devices):
  info, _ = eight_devices
  assert info['specs']['kernel'] == str(P(None, 'model'))
  # Every dense0 kernel-shaped state leaf (momentum, mask) is split alike;
  # nothing else under dense0 but the (replicated) bias.
  assert str(P(None, 'model')) in info['specs']['state']


@pytest.mark.slow
def test_sharded_transformer_lm_gives_the_single_device_masks(tmp_path):
  _run_worker('lm', tmp_path)
  with open(tmp_path / 'info.json', encoding='utf-8') as f:
    info = json.load(f)
  assert info['lm_specs'] == {'query': str(P(None, 'data', 'model', None)),
                              'fc2': str(P(None, 'model', 'data'))}
  assert info['lm_4x2']['mesh'] == {'data': 4, 'model': 2}
  _compare(dict(np.load(tmp_path / 'lm_1x1.npz')),
           dict(np.load(tmp_path / 'lm_4x2.npz')))
  assert info['lm_4x2']['test_loss'] == pytest.approx(
      info['lm_1x1']['test_loss'], rel=1e-4)


def test_checkpoint_from_8x1_resumes_on_4x2(eight_devices):
  info, states = eight_devices
  assert info['moved']['resumed_from_step'] == 6
  assert info['moved']['mesh'] == {'data': 4, 'model': 2}
  _compare(states['1x1'], states['moved'])


if __name__ == '__main__':
  {'mesh': _worker, 'lm': _lm_worker}[sys.argv[1]](sys.argv[2])
