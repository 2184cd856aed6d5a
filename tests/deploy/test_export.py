"""Compact export, bit-packed masks and sparse CPU inference."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import rigl_jax
from rigl_jax.deploy import cli
from rigl_jax.deploy import export
from rigl_jax.deploy import sparse_inference
from rigl_jax.experiment import builders
from rigl_jax.experiment import models


def _bits(a):
  a = np.asarray(a)
  return a.view(np.dtype(f'u{a.dtype.itemsize}'))


def _assert_identical(a_tree, b_tree):
  """Same structure, shapes, dtypes and bits."""
  assert jax.tree.structure(a_tree) == jax.tree.structure(b_tree)
  for a, b in zip(jax.tree.leaves(a_tree), jax.tree.leaves(b_tree)):
    a, b = np.asarray(a), np.asarray(b)
    assert a.dtype == b.dtype and a.shape == b.shape
    np.testing.assert_array_equal(_bits(a), _bits(b))


def _sparse_kernel(rng, shape, sparsity):
  w = rng.standard_normal(shape).astype(np.float32)
  return np.where(rng.random(shape) < sparsity, np.float32(0.0), w)


def _tricky_params():
  rng = np.random.default_rng(0)
  kernel = _sparse_kernel(rng, (40, 30), 0.95)
  kernel[0, :3] = [-0.0, np.nan, np.inf]  # kept bit for bit
  return {
      'dense0': {'kernel': kernel, 'bias': np.zeros(30, np.float32)},
      'conv': {'kernel': _sparse_kernel(rng, (3, 3, 4, 8), 0.8),
               'bias': jnp.arange(8, dtype=jnp.float32)},
      'half': {'kernel': jnp.asarray(_sparse_kernel(rng, (300, 7), 0.5),
                                     jnp.bfloat16)},
      'empty': {'kernel': np.zeros((5, 6), np.float32)},
      'full': {'kernel': rng.standard_normal((6, 5)).astype(np.float32)},
      'count': np.arange(6, dtype=np.int32).reshape(2, 3),
      'scalar': np.float32(3.5),
  }


def test_round_trip_is_exact(tmp_path):
  params = _tricky_params()
  batch_stats = {'bn': {'mean': np.ones(3, np.float32),
                        'var': np.full(3, 2.0, np.float32)}}
  path = str(tmp_path / 'm.npz')
  summary = export.export(path, params, batch_stats=batch_stats,
                          metadata={'note': 'x'})
  variables = export.load(path)
  assert set(variables) == {'params', 'batch_stats'}
  _assert_identical(variables['params'], params)
  _assert_identical(variables['batch_stats'], batch_stats)
  encodings = {k: v.encoding for k, v in summary.leaves.items()}
  assert encodings['params/dense0/kernel'] == 'csr'  # 5% dense
  assert encodings['params/conv/kernel'] == 'bitmask'  # 20% dense
  assert encodings['params/full/kernel'] == 'dense'
  assert encodings['params/dense0/bias'] == 'dense'  # 1-D: as is
  assert encodings['batch_stats/bn/mean'] == 'dense'
  assert export.read(path).metadata == {'note': 'x'}


def _constant_fan_in(rng, shape, k, ablated=()):
  """A kernel whose units (last axis) each read ``k`` inputs, or none."""
  rows, cols = export.matrix_shape(shape)
  w = np.zeros((rows, cols), np.float32)
  for j in range(cols):
    if j not in ablated:
      w[rng.choice(rows, k, replace=False), j] = rng.standard_normal(k)
  return w.reshape(shape)


@pytest.mark.parametrize('encoding', export.ENCODINGS)
@pytest.mark.parametrize('shape', [(40, 30), (3, 3, 4, 8), (300, 7)])
def test_every_encoding_decodes_exactly(encoding, shape):
  rng = np.random.default_rng(1)
  if encoding == 'condensed':  # needs a constant fan-in, ablated units too
    leaf = _constant_fan_in(rng, shape, 5, ablated=(0, 3))
    leaf.reshape(-1)[np.flatnonzero(leaf)[1]] = np.nan
  else:
    leaf = _sparse_kernel(rng, shape, 0.85)
    leaf.reshape(-1)[1] = -0.0
  enc = export.encode_leaf(('k',), leaf, sparse=True, encoding=encoding)
  assert enc.encoding == encoding
  np.testing.assert_array_equal(_bits(enc.to_dense()), _bits(leaf))
  indptr, indices, values = enc.csr()
  rows, cols = export.matrix_shape(shape)
  expected = leaf.reshape(rows, cols)
  rebuilt = np.zeros((rows, cols), np.float32)
  row_of = np.repeat(np.arange(rows), np.diff(indptr))
  rebuilt[row_of, indices] = values
  np.testing.assert_array_equal(_bits(rebuilt), _bits(expected))


def test_constant_fan_in_kernels_are_stored_condensed(tmp_path):
  rng = np.random.default_rng(2)
  kernel = _constant_fan_in(rng, (64, 48), 6, ablated=(5, 17, 47))
  kernel[np.nonzero(kernel)[0][0], np.nonzero(kernel)[1][0]] = -0.0
  params = {'srigl': {'kernel': kernel, 'bias': np.ones(48, np.float32)},
            'random': {'kernel': _sparse_kernel(rng, (64, 48), 0.9)}}
  path = str(tmp_path / 'm.npz')
  summary = export.export(path, params)
  encodings = {k: v.encoding for k, v in summary.leaves.items()}
  assert encodings == {'params/srigl/kernel': 'condensed',
                       'params/srigl/bias': 'dense',
                       'params/random/kernel': 'bitmask'}
  _assert_identical(export.load(path)['params'], params)
  leaf = next(l for l in export.read(path).leaves if l.encoding == 'condensed')
  assert leaf.arrays['values'].shape == (48, 6)
  assert leaf.arrays['indices'].dtype == np.uint8  # 64 inputs
  live = np.ones(48, bool)
  live[[5, 17, 47]] = False  # ablated units (-0.0 is a stored weight)
  np.testing.assert_array_equal(leaf.live(), live)
  assert leaf.nnz == 45 * 6
  np.testing.assert_array_equal(leaf.support(), export._support(kernel))
  # Without it: the smallest other encoding, same contents.
  plain = export.export(str(tmp_path / 'p.npz'), params, condensed=False)
  assert plain.leaves['params/srigl/kernel'].encoding in ('csr', 'bitmask')
  _assert_identical(export.load(str(tmp_path / 'p.npz'))['params'], params)
  # Forcing it on a kernel without a constant fan-in is refused.
  with pytest.raises(ValueError, match='no constant fan-in'):
    export.encode_leaf(('random', 'kernel'), params['random']['kernel'],
                       sparse=True, encoding='condensed')
  # Weights of the mask left at exactly zero (inputs from an ablated unit
  # get no gradient): with the mask, still condensed, zeros stored.
  holes = kernel.copy()
  mask = holes != 0
  mask[np.nonzero(kernel)[0][0], np.nonzero(kernel)[1][0]] = True  # the -0.0
  rows_of = np.nonzero(mask[:, 0])[0][:2]
  holes[rows_of, 0] = 0.0
  assert export.encode_leaf(('h',), holes, sparse=True).encoding != (
      'condensed')
  with_mask = export.encode_leaf(('h',), holes, sparse=True, mask=mask)
  assert with_mask.encoding == 'condensed' and with_mask.nnz == 45 * 6
  np.testing.assert_array_equal(_bits(with_mask.to_dense()), _bits(holes))
  summary = export.export(str(tmp_path / 'h.npz'), {'h': {'kernel': holes}},
                          masks={'h': {'kernel': mask}})
  assert summary.leaves['params/h/kernel'].encoding == 'condensed'
  # A fan-in so large that condensed is not smaller than dense: the
  # smallest of the others.
  full = _constant_fan_in(rng, (8, 8), 7)
  assert export.encode_leaf(('f',), full, sparse=True).encoding == 'bitmask'


def test_srigl_masks_export_condensed(tmp_path):
  params = {'a': {'kernel': np.ones((100, 40), np.float32)},
            'b': {'kernel': np.ones((40, 10), np.float32)}}
  tx = rigl_jax.srigl(optax.identity(), sparsity=0.9, distribution='erk',
                      end_step=100)
  params, state = rigl_jax.masked_init(
      tx, jax.tree.map(jnp.asarray, params))
  summary = export.export(str(tmp_path / 'm.npz'), jax.device_get(params),
                          masks=rigl_jax.get_masks(state))
  assert {v.encoding for v in summary.leaves.values()} == {'condensed'}
  _assert_identical(export.load(str(tmp_path / 'm.npz'))['params'],
                    jax.device_get(params))


def test_version_1_files_still_load(tmp_path):
  params = _tricky_params()
  path = str(tmp_path / 'v1.npz')
  export.export(path, params, condensed=False)
  with np.load(path) as f:  # as an export of version 1 wrote it
    arrays = dict(f)
  meta = json.loads(bytes(arrays['__meta__']).decode())
  assert meta['version'] == export.VERSION == 2
  meta['version'] = 1
  arrays['__meta__'] = np.frombuffer(json.dumps(meta).encode(), np.uint8)
  np.savez(path, **arrays)
  _assert_identical(export.load(path)['params'], params)
  meta['version'] = 3
  arrays['__meta__'] = np.frombuffer(json.dumps(meta).encode(), np.uint8)
  np.savez(path, **arrays)
  with pytest.raises(ValueError, match='version 3'):
    export.load(path)


def test_masks_choose_the_sparse_leaves(tmp_path):
  params = _tricky_params()
  masks = jax.tree.map(lambda _: None, params)
  masks['conv']['kernel'] = np.ones((3, 3, 4, 8), bool)
  summary = export.export(str(tmp_path / 'm.npz'), params, masks=masks)
  sparse = {k for k, v in summary.leaves.items() if v.encoding != 'dense'}
  assert sparse == {'params/conv/kernel'}
  _assert_identical(export.load(str(tmp_path / 'm.npz'))['params'], params)


def test_file_size_grows_with_nonzeros(tmp_path):
  rng = np.random.default_rng(0)
  sizes = {}
  for sparsity in (0.8, 0.9, 0.95):
    params = {'a': {'kernel': _sparse_kernel(rng, (1024, 1024), sparsity)},
              'b': {'kernel': _sparse_kernel(rng, (784, 512), sparsity),
                    'bias': np.zeros(512, np.float32)}}
    summary = export.export(str(tmp_path / f'{sparsity}.npz'), params)
    sizes[sparsity] = summary.file_bytes
    assert summary.file_bytes == os.path.getsize(tmp_path / f'{sparsity}.npz')
    dense = summary.dense_bytes
  # 4 bytes per value plus 1 bit per weight (bitmask) or 2 bytes per value
  # (csr, uint16 columns), whichever is smaller.
  assert 0.45 < sizes[0.9] / sizes[0.8] < 0.65
  assert 0.45 < sizes[0.95] / sizes[0.9] < 0.65
  assert sizes[0.9] < 0.15 * dense and sizes[0.95] < 0.08 * dense
  compressed = export.export(str(tmp_path / 'c.npz'), params, compressed=True)
  assert compressed.file_bytes < sizes[0.95]


def test_pack_unpack_masks_round_trip():
  rng = np.random.default_rng(0)
  masks = {'a': {'kernel': rng.random((5, 7)) < 0.3, 'bias': None},
           'b': {'kernel': jnp.asarray(rng.random((3, 3, 2, 5)) < 0.5)},
           'c': None}
  packed = export.pack_masks(masks)
  assert packed['c'] is None and packed['a']['bias'] is None
  leaf = packed['a']['kernel']
  assert leaf['bits'].dtype == np.uint8 and leaf['bits'].shape == (5,)
  np.testing.assert_array_equal(leaf['shape'], [5, 7])
  unpacked = export.unpack_masks(packed)
  assert jax.tree.structure(unpacked, is_leaf=lambda x: x is None) == (
      jax.tree.structure(masks, is_leaf=lambda x: x is None))
  for a, b in zip(jax.tree.leaves(unpacked), jax.tree.leaves(masks)):
    assert a.dtype == np.bool_
    np.testing.assert_array_equal(a, np.asarray(b))
  # Packed leaves restored as jax arrays (e.g. from a checkpoint) unpack too.
  np.testing.assert_array_equal(
      export.unpack_masks(jax.tree.map(jnp.asarray, packed))['b']['kernel'],
      masks['b']['kernel'])


def _masked_model(name, kwargs, x, num_classes, sparsity=0.9, **sparse_kw):
  model = models.get_model(name, num_classes=num_classes, **kwargs)
  tx = rigl_jax.static(optax.identity(), sparsity=sparsity,
                       distribution='erk', **sparse_kw)

  @jax.jit
  def init(key):
    params = model.init(key, x[:1], train=False)['params']
    return rigl_jax.masked_init(tx, params)

  params, state = init(jax.random.PRNGKey(0))
  return model, jax.device_get(params), rigl_jax.get_masks(state)


def _apply(model, params, x):
  return np.asarray(jax.jit(lambda p, x: model.apply({'params': p}, x,
                                                     train=False))(params, x))


_rng = np.random.default_rng(0)
_IMAGES = np.where(_rng.random((40, 28, 28, 1)) < 0.5, 0.0,
                   _rng.random((40, 28, 28, 1))).astype(np.float32)
_CASES = {
    'lenet_300_100': ({}, _IMAGES, 10, {}),
    'mlp': ({'hidden_sizes': (128, 64, 32)}, _IMAGES, 10, {}),
    'lenet5': ({}, _IMAGES, 10, {}),
    'small_cnn': ({'channels': (8, 16), 'hidden_size': 32},
                  _rng.random((40, 8, 8, 3)).astype(np.float32), 10, {}),
    'char_lstm': ({'embed_dim': 16, 'hidden_size': 48, 'num_layers': 2},
                  _rng.integers(0, 30, (40, 9)).astype(np.int32), 30,
                  {'is_sparse': ['kernel$']}),
}


@pytest.mark.parametrize('name', sorted(_CASES))
def test_sparse_inference_matches_masked_dense_model(tmp_path, name):
  kwargs, x, num_classes, sparse_kw = _CASES[name]
  model, params, masks = _masked_model(name, kwargs, x, num_classes,
                                       **sparse_kw)
  path = str(tmp_path / 'm.npz')
  export.export(path, params, masks=masks, metadata={'model': {'name': name}})
  expected = _apply(model, params, x)
  sparse = sparse_inference.load(path)
  assert any(layer.sparse for layer in sparse.layers.values())
  # Batch 1 and 3: scipy's mat-vec kernels; 40 (and convolutions): BCSR for
  # wide right-hand sides; then scipy only, and everything dense.
  variants = [(sparse, (1, 3, 40)),
              (sparse_inference.load(path, bcsr_min_columns=None), (40,)),
              (sparse_inference.load(path, max_density=0.0), (3,))]
  for m, batches in variants:
    for batch in batches:
      out = m(x[:batch])
      assert out.shape == expected[:batch].shape and out.dtype == np.float32
      np.testing.assert_allclose(out, expected[:batch], rtol=1e-4, atol=1e-5)


def test_sparse_inference_from_in_memory_params():
  kwargs, x, num_classes, _ = _CASES['lenet_300_100']
  model, params, _ = _masked_model('lenet_300_100', kwargs, x, num_classes)
  sparse = sparse_inference.build('lenet_300_100', params)
  np.testing.assert_allclose(sparse(x[:2]), _apply(model, params, x[:2]),
                             rtol=1e-4, atol=1e-5)
  with pytest.raises(ValueError, match='supported'):
    sparse_inference.build('resnet50', params)


def test_cli_exports_a_finished_run(tmp_path, capsys, monkeypatch,
                                    trained_run):
  workdir = trained_run.workdir
  steps = trained_run.results['steps']
  restored = []  # what the CLI restored from the checkpoint
  real_restore = cli.restore_run
  monkeypatch.setattr(cli, 'restore_run',
                      lambda w: restored.append(real_restore(w)) or
                      restored[-1])
  out = str(tmp_path / 'model.npz')
  assert cli.main(['--workdir', workdir, '--out', out]) == 0
  printed = capsys.readouterr().out
  assert 'dense bytes' in printed and 'exported file bytes' in printed

  state, config, _ = restored[0]
  assert int(state.step) == steps
  variables = export.load(out)
  _assert_identical(variables['params'], jax.device_get(state.params))
  exported = export.read(out)
  assert exported.metadata['model']['name'] == 'mlp'
  assert exported.metadata['step'] == steps
  dense_bytes = 4 * sum(p.size for p in jax.tree.leaves(state.params))
  assert os.path.getsize(out) < 0.35 * dense_bytes  # 90% sparse, ERK

  _, model, _, _, _ = builders.build(config)
  x = _IMAGES[:4]
  np.testing.assert_allclose(
      sparse_inference.load(out)(x),
      model.apply({'params': state.params}, x, train=False),
      rtol=1e-4, atol=1e-5)

  assert cli.main(['--workdir', str(tmp_path / 'missing')]) == 2
  assert capsys.readouterr().err.startswith('error:')


@pytest.mark.parametrize('fallback,dense_head',
                         [(False, False), (False, True), (True, False)])
def test_condensed_inference_equals_the_dense_model(monkeypatch, fallback,
                                                    dense_head):
  from rigl_jax.deploy import condensed  # pylint: disable=g-import-not-at-top
  if fallback:  # numpy's gather instead of the numba kernels
    monkeypatch.setattr(condensed, 'numba', None)
  elif not condensed.compiled():
    pytest.skip('numba is not installed')
  rng = np.random.default_rng(3)
  params = {
      'dense0': {'kernel': _constant_fan_in(rng, (784, 96), 40,
                                             ablated=(3, 50)),
                  'bias': rng.standard_normal(96).astype(np.float32)},
      'dense1': {'kernel': _constant_fan_in(rng, (96, 64), 9),
                  'bias': rng.standard_normal(64).astype(np.float32)},
      'head': {'kernel': (rng.standard_normal((64, 10)).astype(np.float32)
                          if dense_head else
                          _constant_fan_in(rng, (64, 10), 7)),
               'bias': np.zeros(10, np.float32)},
  }
  model = models.get_model('mlp', num_classes=10, hidden_sizes=(96, 64))
  sparse = sparse_inference.build('mlp', jax.tree.map(
      lambda a: export.encode_leaf((), a, sparse=a.ndim == 2), params,
      is_leaf=lambda a: isinstance(a, np.ndarray)))
  layers = [l for l in sparse.layers.values() if l.sparse]
  assert len(layers) == 3 - dense_head
  assert all(l._condensed is not None for l in layers)
  # A few examples run the whole stack in one compiled call (a small dense
  # head included), where numba is there.
  assert (sparse._chain is not None) == (not fallback)
  x = rng.random((256, 28, 28, 1)).astype(np.float32)
  expected = _apply(model, params, x)
  for batch in (1, 3, 16, 17, 256):  # fused chain, and layer by layer
    np.testing.assert_allclose(sparse(x[:batch]), expected[:batch],
                               rtol=1e-4, atol=1e-4)
  if not fallback:  # the chain's numpy path gives the same
    monkeypatch.setattr(condensed, 'numba', None)
    chain = condensed.Chain(sparse._chain.layers)
    np.testing.assert_allclose(chain(x[:3].reshape(3, -1)), expected[:3],
                               rtol=1e-4, atol=1e-4)
