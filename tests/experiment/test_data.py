"""Tests for the data package `rigl_jax.experiment.data`."""

import hashlib
import os
import pathlib
import shutil
import subprocess
import sys

import numpy as np
import pytest

from rigl_jax.experiment import data
from rigl_jax.experiment.data import base
from rigl_jax.experiment.data import bundled
from rigl_jax.experiment.data import fashion_mnist
from rigl_jax.experiment.data import in_memory
from rigl_jax.experiment.data import shakespeare

_FMNIST_TEST = ('fashion_mnist/t10k-images-idx3-ubyte.xz',
                'fashion_mnist/t10k-labels-idx1-ubyte.xz')


def _config(name: str, **overrides):
  config = data.default_data_config(name)
  config.update(overrides)
  return config


def _take(iterator, n: int) -> list[dict[str, np.ndarray]]:
  return [next(iterator) for _ in range(n)]


def _assert_batches_equal(a, b) -> None:
  assert a.keys() == b.keys()
  for key in a:
    np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def _index_stream(num_examples: int, batch_size: int, *, seed: int = 0,
                  start_step: int = 0, process_index: int = 0,
                  process_count: int = 1):
  """A train stream whose batches are the example indices themselves."""
  return in_memory.train_stream(
      num_examples, lambda epoch, idx: {'idx': idx.copy()},
      batch_size=batch_size, seed=seed, start_step=start_step,
      process_index=process_index, process_count=process_count)


# ---------------------------------------------------------------- bundled ---


def test_bundled_fashion_mnist_loads():
  train_images, train_labels = fashion_mnist.load('train')
  test_images, test_labels = fashion_mnist.load('test')
  assert train_images.shape == (60000, 28, 28, 1)
  assert test_images.shape == (10000, 28, 28, 1)
  assert train_images.dtype == np.uint8 and train_labels.dtype == np.int32
  # Fashion-MNIST is balanced: 6000 train and 1000 test images per class.
  np.testing.assert_array_equal(np.bincount(train_labels), [6000] * 10)
  np.testing.assert_array_equal(np.bincount(test_labels), [1000] * 10)
  assert train_images.max() == 255 and train_images.min() == 0
  # First training label of the official file is 9 (ankle boot).
  assert train_labels[0] == 9 and test_labels[0] == 9
  # A short run reads (and decompresses) only the examples it trains on.
  head_images, head_labels = fashion_mnist.load('train', count=3000)
  np.testing.assert_array_equal(head_images, train_images[:3000])
  np.testing.assert_array_equal(head_labels, train_labels[:3000])

  ds = data.get_data(_config('fashion_mnist'), seed=0, process_index=0,
                     process_count=1)
  assert ds.info == data.DatasetInfo(
      name='fashion_mnist', kind='image', input_shape=(28, 28, 1),
      num_classes=10, num_train=60000, num_eval={'test': 10000})
  batch = next(ds.train_batches(0))
  assert batch['image'].shape == (128, 28, 28, 1)
  assert batch['image'].dtype == np.float32
  assert batch['label'].dtype == np.int32
  assert batch['label'].min() >= 0 and batch['label'].max() < 10
  # Normalized with the dataset statistics: about zero mean, unit std.
  images = fashion_mnist.normalize(train_images[:5000])
  assert abs(images.mean()) < 0.05 and abs(images.std() - 1) < 0.05


def _copy_files(tmp_path, names) -> None:
  for name in names:
    (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(bundled.BUNDLED_DIR / name, tmp_path / name)


def test_bundled_checksum_mismatch_raises(tmp_path):
  _copy_files(tmp_path, _FMNIST_TEST)
  images, labels = fashion_mnist.load('test', tmp_path)  # Intact copy loads.
  assert len(images) == len(labels) == 10000

  corrupted = tmp_path / 'copy'
  _copy_files(corrupted, _FMNIST_TEST)
  path = corrupted / _FMNIST_TEST[1]
  raw = bytearray(path.read_bytes())
  raw[100] ^= 0xFF
  path.write_bytes(bytes(raw))
  with pytest.raises(ValueError) as error:
    fashion_mnist.load('test', corrupted)
  message = str(error.value)
  assert str(path) in message
  assert bundled.SHA256[_FMNIST_TEST[1]] in message
  assert hashlib.sha256(raw).hexdigest() in message
  assert 'reinstall' in message and '\n' not in message


def test_bundled_missing_file_raises(tmp_path):
  with pytest.raises(ValueError, match='cannot be read.*reinstall'):
    shakespeare.load(tmp_path)


# ---------------------------------------------------------- train streams ---


def test_train_stream_epochs_are_permutations():
  batches = [b['idx'] for b in _take(_index_stream(10, 3), 9)]
  # 10 examples, batch 3: 3 steps per epoch, the remainder is dropped.
  epochs = [np.concatenate(batches[i:i + 3]) for i in (0, 3, 6)]
  for epoch, order in enumerate(epochs):
    np.testing.assert_array_equal(
        order, in_memory.epoch_permutation(0, epoch, 10)[:9])
    assert len(set(order)) == 9
  assert not np.array_equal(epochs[0], epochs[1])
  assert not np.array_equal(epochs[1], epochs[2])


def test_train_stream_resume_equals_skip():
  stream = _take(_index_stream(50, 8, seed=3), 20)
  for start in (1, 5, 6, 13):  # 6 steps per epoch: starts inside and at edges.
    resumed = _take(_index_stream(50, 8, seed=3, start_step=start),
                    20 - start)
    for a, b in zip(stream[start:], resumed):
      _assert_batches_equal(a, b)
  other_seed = _take(_index_stream(50, 8, seed=4), 1)[0]
  assert not np.array_equal(stream[0]['idx'], other_seed['idx'])


def test_train_stream_processes_cover_global_batch():
  whole = _take(_index_stream(40, 8), 12)
  per_process = [_take(_index_stream(40, 8, process_index=p, process_count=4),
                       12) for p in range(4)]
  for step, batch in enumerate(whole):
    shards = [per_process[p][step]['idx'] for p in range(4)]
    assert all(len(s) == 2 for s in shards)
    np.testing.assert_array_equal(np.concatenate(shards), batch['idx'])


def test_fashion_mnist_stream_resume_and_processes():
  config = _config('fashion_mnist', batch_size=64, train_fraction=0.005)
  ds = data.get_data(config, seed=7, process_index=0, process_count=1)
  assert ds.info.num_train == 300  # 4 steps per epoch.
  stream = _take(ds.train_batches(0), 10)
  for a, b in zip(stream[6:], _take(ds.train_batches(6), 4)):
    _assert_batches_equal(a, b)
  again = data.get_data(config, seed=7, process_index=0, process_count=1)
  _assert_batches_equal(stream[0], next(again.train_batches(0)))

  shards = [next(data.get_data(config, seed=7, process_index=p,
                               process_count=2).train_batches(5))
            for p in range(2)]
  for key in ('image', 'label'):
    assert shards[0][key].shape[0] == 32
    np.testing.assert_array_equal(
        np.concatenate([s[key] for s in shards]), stream[5][key])


# ----------------------------------------------------------- eval streams ---


def test_eval_stream_pads_and_masks():
  def gather(epoch, idx):
    return {'x': idx.astype(np.float32) + 1}

  seen = []
  for p in range(2):
    batches = list(in_memory.eval_stream(
        11, gather, batch_size=8, process_index=p, process_count=2))
    assert len(batches) == 2  # ceil(11 / 8), on every process.
    for batch in batches:
      assert batch['x'].shape == batch['mask'].shape == (4,)
      assert batch['mask'].dtype == np.float32
      np.testing.assert_array_equal(batch['x'][batch['mask'] == 0], 0)
      seen.extend(batch['x'][batch['mask'] == 1] - 1)
  assert sorted(seen) == list(range(11))


def test_fashion_mnist_eval_masks_sum_to_split_size():
  config = _config('fashion_mnist', eval_batch_size=3000)
  ds = data.get_data(config, seed=0, process_index=1, process_count=2)
  batches = list(ds.eval_batches('test'))
  assert len(batches) == 4
  assert all(b['image'].shape == (1500, 28, 28, 1) for b in batches)
  masks = [b['mask'].sum() for b in batches]
  # Global batch 3: examples 9000-9999 are on process 0's half.
  assert masks == [1500, 1500, 1500, 0]
  process0 = data.get_data(config, seed=0, process_index=0, process_count=2)
  total = sum(b['mask'].sum() for b in process0.eval_batches('test'))
  assert total + sum(masks) == 10000
  _, labels = fashion_mnist.load('test')
  np.testing.assert_array_equal(batches[0]['label'], labels[1500:3000])


# ------------------------------------------------------------ shakespeare ---


def test_shakespeare_corpus_vocab_and_splits():
  corpus = shakespeare.load()
  vocab = corpus.vocab
  assert len(corpus.ids) == 5_057_198
  assert len(vocab.chars) == 84
  assert list(vocab.chars) == sorted(set(vocab.chars))
  sizes = [len(corpus.split(s)) for s in ('train', 'validation', 'test')]
  assert sum(sizes) == len(corpus.ids)
  assert sizes[0] == int(0.9 * len(corpus.ids))
  # The splits are contiguous, in order.
  np.testing.assert_array_equal(
      np.concatenate([corpus.split(s) for s in ('train', 'validation',
                                                'test')]), corpus.ids)
  text = vocab.decode(corpus.ids[:2000])
  assert 'ALL\'S WELL THAT ENDS WELL' in text.upper()
  np.testing.assert_array_equal(vocab.encode(text), corpus.ids[:2000])
  with pytest.raises(ValueError, match='not in the vocabulary'):
    vocab.encode('caf\u00e9')


def test_shakespeare_batches():
  config = _config('shakespeare', batch_size=16, eval_batch_size=32,
                   seq_len=50)
  ds = data.get_data(config, seed=1, process_index=0, process_count=1)
  corpus = shakespeare.load()
  train_text = corpus.split('train')
  assert ds.info.kind == 'text' and ds.info.input_shape == (50,)
  assert ds.info.num_classes == 84
  assert ds.info.num_train == (len(train_text) - 50) // 50
  batches = _take(ds.train_batches(0), 3)
  for batch in batches:
    assert batch['inputs'].shape == batch['targets'].shape == (16, 50)
    assert batch['inputs'].dtype == batch['targets'].dtype == np.int32
    np.testing.assert_array_equal(batch['inputs'][:, 1:],
                                  batch['targets'][:, :-1])
  # Each row is a window of the train text.
  row = np.concatenate([batches[0]['inputs'][0], batches[0]['targets'][0, -1:]])
  needle = corpus.vocab.decode(row)
  assert needle in corpus.vocab.decode(train_text)
  _assert_batches_equal(batches[2], next(ds.train_batches(2)))

  for split in ('validation', 'test'):
    n = ds.info.num_eval[split]
    assert n == (len(corpus.split(split)) - 1) // 50
    eval_batches = list(ds.eval_batches(split))
    assert len(eval_batches) == -(-n // 32)
    assert sum(b['mask'].sum() for b in eval_batches) == n
    first = eval_batches[0]
    np.testing.assert_array_equal(first['inputs'][0],
                                  corpus.split(split)[:50])
    np.testing.assert_array_equal(first['targets'][0],
                                  corpus.split(split)[1:51])


# ------------------------------------------------------------------- tfds ---

_TFDS_SHAPES = {
    'mnist': (28, 28, 1, 10),
    'fashion_mnist': (28, 28, 1, 10),
    'cifar10': (32, 32, 3, 10),
    'cifar100': (32, 32, 3, 100),
    'imagenet2012': (32, 32, 3, 1000),
}


@pytest.mark.parametrize('name', sorted(_TFDS_SHAPES))
def test_tfds_pipeline_under_mock_data(name):
  tfds = pytest.importorskip('tensorflow_datasets')
  height, width, channels, num_classes = _TFDS_SHAPES[name]
  config = _config(name, source='tfds', batch_size=8, eval_batch_size=6,
                   image_size=32, shuffle_buffer=16)
  with tfds.testing.mock_data(num_examples=10):
    ds = data.get_data(config, seed=0, process_index=0, process_count=1)
    eval_split = 'validation' if name == 'imagenet2012' else 'test'
    assert ds.info.input_shape == (height, width, channels)
    assert ds.info.num_classes == num_classes
    assert ds.info.num_eval == {eval_split: 10}
    stream = _take(ds.train_batches(0), 4)
    for batch in stream:
      assert batch['image'].shape == (8, height, width, channels)
      assert batch['image'].dtype == np.float32
      assert batch['label'].dtype == np.int32
      assert 0 <= batch['label'].min() <= batch['label'].max() < num_classes
      # Normalized: pixel values in [0, 1] map to [-mean/std, (1-mean)/std].
      assert -2.2 < batch['image'].min() < 0 < batch['image'].max() < 3.0
    _assert_batches_equal(stream[3], next(ds.train_batches(3)))
    evals = list(ds.eval_batches(eval_split))
    assert [b['mask'].tolist() for b in evals] == [[1] * 6, [1] * 4 + [0] * 2]
    assert evals[0]['image'].shape == (6, height, width, channels)
    np.testing.assert_array_equal(evals[1]['image'][4:], 0)
    # A second pass (cached for small datasets) gives the same batches.
    _assert_batches_equal(evals[0], next(ds.eval_batches(eval_split)))
    per_process = data.get_data(config, seed=0, process_index=1,
                                process_count=2)
    assert next(per_process.train_batches(0))['image'].shape[0] == 4


def test_cifar_augmentation_is_a_padded_crop_or_flip():
  tf = pytest.importorskip('tensorflow')
  from rigl_jax.experiment.data import image_ops  # pylint: disable=g-import-not-at-top
  image = np.arange(32 * 32 * 3, dtype=np.int32).reshape(32, 32, 3) + 1
  padded = np.pad(image, [(4, 4), (4, 4), (0, 0)])
  windows = {}
  for top in range(9):
    for left in range(9):
      window = padded[top:top + 32, left:left + 32]
      windows[window.tobytes()] = (top, left, False)
      windows[window[:, ::-1].tobytes()] = (top, left, True)
  seen = set()
  for i in range(20):
    out = image_ops.pad_crop_flip(tf.constant(image),
                                  tf.constant([0, i], tf.int64)).numpy()
    assert out.tobytes() in windows
    seen.add(windows[out.tobytes()])
  assert len(seen) > 10
  assert {flip for _, _, flip in seen} == {False, True}


def test_imagenet_crops_have_the_configured_size():
  tf = pytest.importorskip('tensorflow')
  from rigl_jax.experiment.data import image_ops  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(0)
  jpeg = tf.io.encode_jpeg(rng.integers(0, 256, (120, 200, 3), np.uint8))
  center = image_ops.decode_and_center_crop(jpeg, 48)
  assert center.shape == (48, 48, 3)
  crops = [image_ops.decode_and_random_crop(jpeg, 48, tf.constant([0, i],
                                                                   tf.int64))
           for i in range(3)]
  assert all(c.shape == (48, 48, 3) for c in crops)
  assert 0 <= float(tf.reduce_min(crops[0])) <= float(
      tf.reduce_max(crops[0])) <= 255
  again = image_ops.decode_and_random_crop(jpeg, 48, tf.constant([0, 0],
                                                                  tf.int64))
  np.testing.assert_array_equal(crops[0].numpy(), again.numpy())
  assert not np.array_equal(crops[0].numpy(), crops[1].numpy())


# ------------------------------------------------------------- bad input ---


def test_unknown_dataset_names_valid_choices():
  with pytest.raises(ValueError) as error:
    data.get_data({'name': 'svhn'}, seed=0, process_index=0, process_count=1)
  assert "'svhn'" in str(error.value)
  assert all(name in str(error.value) for name in data.DATASETS)
  with pytest.raises(ValueError, match='valid names: fashion_mnist, mnist'):
    data.default_data_config('imagenet')


@pytest.mark.parametrize('overrides, match', [
    (dict(source='web'), 'valid sources: bundled, tfds'),
    (dict(name='shakespeare', source='tfds'), 'valid sources for it: bundled'),
    (dict(batch_size=10), 'batch_size=10 is not divisible .* 3'),
    (dict(eval_batch_size=1000), 'eval_batch_size=1000 is not divisible'),
    (dict(train_fraction=0.0), r'train_fraction must be in \(0, 1\]'),
])
def test_bad_config_raises(overrides, match):
  config = _config('fashion_mnist', batch_size=12, eval_batch_size=12)
  config.update(overrides)
  with pytest.raises(ValueError, match=match):
    data.get_data(config, seed=0, process_index=0, process_count=3)


def test_unprepared_tfds_dataset_raises(tmp_path):
  pytest.importorskip('tensorflow_datasets')
  config = {'name': 'mnist', 'tfds_data_dir': str(tmp_path)}
  with pytest.raises(ValueError, match='not prepared in .*tfds_data_dir'):
    data.get_data(config, seed=0, process_index=0, process_count=1)


def test_unknown_eval_split_raises():
  ds = data.get_data(_config('shakespeare'), seed=0, process_index=0,
                     process_count=1)
  with pytest.raises(ValueError, match='valid splits: test, validation'):
    ds.eval_batches('train')


def test_bundled_data_does_not_import_tensorflow():
  code = ('import sys; from rigl_jax.experiment import data; '
          "d = data.get_data({'name': 'shakespeare'}, seed=0, "
          'process_index=0, process_count=1); next(d.train_batches(0)); '
          "assert 'tensorflow' not in sys.modules, 'tensorflow imported'")
  subprocess.run([sys.executable, '-c', code], check=True,
                 cwd=pathlib.Path(__file__).resolve().parents[2])


def test_the_registry_matches_the_bundled_data():
  """`base.SPECS` is what the FLOPs report and the default configs read
  without loading data: it must agree with the loaded datasets."""
  for name in base.BUNDLED:
    spec = base.SPECS[name]
    info = data.get_data(data.default_data_config(name), seed=0).info
    assert info.kind == spec.kind
    assert info.num_classes == spec.num_classes
    assert sorted(info.num_eval) == sorted(spec.eval_splits)
    if spec.kind == 'image':
      assert info.input_shape == spec.image_shape
      assert info.num_train == spec.num_train
  corpus = shakespeare.load()
  assert len(corpus.split('train')) == base.SPECS['shakespeare'].num_train


def test_lm1b_is_tokenized_once_then_read_as_resumable_windows(tmp_path):
  tfds = pytest.importorskip('tensorflow_datasets')
  spm = pytest.importorskip('sentencepiece')
  from rigl_jax.experiment.data import tfds_text  # pylint: disable=g-import-not-at-top
  config = _config('lm1b', source='tfds', vocab_size=64, seq_len=8,
                   batch_size=4, eval_batch_size=6, token_dir=str(tmp_path))
  with tfds.testing.mock_data(num_examples=40):
    ds = data.get_data(config, seed=1, process_index=0, process_count=1)
    texts = list(tfds_text._texts(tfds.builder('lm1b'), 'train'))  # pylint: disable=protected-access
    made = {f: os.path.getmtime(tmp_path / f)
            for f in ('spm.model', 'train.bin', 'test.bin')}
    again = data.get_data(config, seed=1, process_index=0, process_count=1)
    halves = [data.get_data(config, seed=1, process_index=i, process_count=2)
              for i in range(2)]
  # Made once: the second load reads the same files.
  assert made == {f: os.path.getmtime(tmp_path / f) for f in made}
  sp = spm.SentencePieceProcessor(model_file=str(tmp_path / 'spm.model'))
  assert ds.info.num_classes == sp.get_piece_size() <= 64
  assert ds.info.kind == 'text' and ds.info.input_shape == (8,)
  # The train file: every example's pieces and an end of sentence, in order.
  want = [t for ids in sp.encode(texts) for t in (*ids, tfds_text.EOS_ID)]
  tokens = np.fromfile(tmp_path / 'train.bin', np.uint16)
  assert tokens.tolist() == want
  assert ds.info.num_train == (len(want) - 8) // 8
  stream = _take(ds.train_batches(0), 6)
  for batch in stream:
    assert batch['inputs'].dtype == np.int32
    assert batch['inputs'].shape == batch['targets'].shape == (4, 8)
    np.testing.assert_array_equal(batch['inputs'][:, 1:],
                                  batch['targets'][:, :-1])
    assert batch['targets'].max() < ds.info.num_classes
  # Resumed at any step: the same batches; two processes: the halves.
  for start in (1, 4):
    for a, b in zip(stream[start:], _take(again.train_batches(start), 2)):
      _assert_batches_equal(a, b)
  for step, batch in enumerate(stream[:3]):
    parts = [_take(h.train_batches(step), 1)[0] for h in halves]
    np.testing.assert_array_equal(
        batch['inputs'], np.concatenate([p['inputs'] for p in parts]))
  evals = list(ds.eval_batches('test'))
  assert sum(b['mask'].sum() for b in evals) == ds.info.num_eval['test']


def test_lm1b_not_prepared_is_one_clear_error(tmp_path):
  pytest.importorskip('tensorflow_datasets')
  config = _config('lm1b', source='tfds', tfds_data_dir=str(tmp_path),
                   token_dir=str(tmp_path / 'tokens'))
  with pytest.raises(ValueError, match="'lm1b' is not prepared.*tfds build"):
    data.get_data(config, seed=0, process_index=0, process_count=1)


@pytest.mark.parametrize('name', ['cifar10', 'imagenet2012'])
def test_tfds_resume_is_exact_and_bounded_by_one_epoch(name):
  """A tfds stream resumed at step N gives the uninterrupted batches, and
  starts at N's epoch: resuming 10**9 steps in reads no more than at 3."""
  tfds = pytest.importorskip('tensorflow_datasets')
  from rigl_jax.experiment.data import tfds_images  # pylint: disable=g-import-not-at-top
  config = _config(name, source='tfds', batch_size=4, eval_batch_size=6,
                   image_size=32, shuffle_buffer=16)
  with tfds.testing.mock_data(num_examples=10):
    ds = data.get_data(config, seed=3, process_index=0, process_count=1)
    # 10 examples, batches of 4: epochs end mid-batch (2.5 steps each).
    stream = _take(ds.train_batches(0), 12)
    for start in (1, 2, 5, 9):
      resumed = _take(ds.train_batches(start), 12 - start)
      for a, b in zip(stream[start:], resumed):
        _assert_batches_equal(a, b)
    # Epochs differ in order (reshuffled with the epoch's seed).
    assert stream[0]['label'].tolist() != stream[5]['label'].tolist() or (
        stream[1]['label'].tolist() != stream[6]['label'].tolist())
    # Old code skipped 4 * 10**9 records here (hours); now it starts at
    # epoch 4 * 10**8 and skips none.
    assert tfds_images.resume_position(4 * 10**9, 10) == (4 * 10**8, 0)
    far = next(ds.train_batches(10**9))
    assert far['image'].shape == (4, 32, 32, 3)


@pytest.mark.parametrize('name', ['fashion_mnist', 'shakespeare'])
def test_registry_info_is_what_the_loader_reports(name):
  """`registry_info` (FLOPs, benchmarks) agrees with the loaded data."""
  config = data.default_data_config(name)
  loaded = data.get_data(config, seed=0).info
  info = data.registry_info(config)
  assert info._replace(num_eval={}, num_train=0) == loaded._replace(
      num_eval={}, num_train=0)
  assert abs(info.num_train - loaded.num_train) <= 1


def test_registry_info_names_the_valid_datasets():
  config = data.default_data_config('cifar10')
  config.name = 'cifar11'
  with pytest.raises(ValueError, match=r"unknown dataset 'cifar11'; valid "
                     r"names: .*\bcifar10\b"):
    data.registry_info(config)
