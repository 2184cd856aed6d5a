"""Image classification datasets from tensorflow-datasets.

Supports 'mnist', 'fashion_mnist', 'cifar10', 'cifar100' and 'imagenet2012'
(prepared beforehand in `tfds_data_dir`; nothing is downloaded here).

Each process reads its own shard of every split
(`tfds.split_for_jax_process`). The train stream is: read with a seeded file
order, cache (small datasets), then epoch after epoch, each shuffled with a
seed of (data seed, epoch); number the examples, augment each with a
stateless seed folded from (data seed, process, number), and batch.
Resuming at `start_step` starts at the epoch that holds example
`start_step * per-process batch` and skips less than one epoch of records
*before* augmentation (and, for ImageNet, before JPEG decoding), so a
resume costs at most one epoch of reading however late it comes
(`resume_position`), and yields exactly the batches an uninterrupted run
would.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import ml_collections
import tensorflow as tf
import tensorflow_datasets as tfds

from rigl_jax.experiment.data import base
from rigl_jax.experiment.data import image_ops

# Epochs of the train stream (it ends after this many, i.e. never).
_EPOCHS = 2**62


def resume_position(example: int, epoch_size: int) -> tuple[int, int]:
  """Where a process's train stream stands at its ``example``-th example.

  The stream is epoch after epoch of this process's shard, each shuffled
  with a seed of (data seed, epoch), so example ``n`` is example
  ``n % epoch_size`` of epoch ``n // epoch_size``: a resumed pipeline
  starts at that epoch and skips less than one epoch of (undecoded)
  records, however far into training it resumes.

  Example:

  >>> resume_position(2_500_000_000, 1_281_167 // 8)
  (15610, 136550)
  """
  if epoch_size < 1:
    raise ValueError(f'the train shard is empty (epoch_size={epoch_size})')
  return divmod(example, epoch_size)


try:  # The data pipeline must not take the accelerators from JAX.
  tf.config.set_visible_devices([], 'GPU')
except RuntimeError:  # TF already initialized its devices.
  pass

_AUTOTUNE = tf.data.AUTOTUNE


# The datasets read from tfds here (facts in `base.SPECS`).
NAMES: tuple[str, ...] = tuple(
    n for n, spec in base.SPECS.items()
    if spec.kind == 'image' and 'tfds' in spec.sources)


def _num_examples(builder: tfds.core.DatasetBuilder, split: str) -> int:
  """Number of examples in a (sub)split, from the dataset's cardinality."""
  count = int(builder.as_dataset(split=split).cardinality())
  if count < 0:
    count = builder.info.splits[split].num_examples
  return count


def _train_preprocess(name: str, spec: base.DatasetSpec, image_size: int,
                      seed: int, process_index: int
                      ) -> Callable[..., base.Batch]:
  """(number, example) -> augmented, normalized example."""
  mean, std = base.MEAN_STD[name]
  key = tf.constant([seed, process_index], tf.int64)

  def preprocess(index: tf.Tensor, example: dict[str, tf.Tensor]):
    example_seed = tf.random.experimental.stateless_fold_in(key, index)
    image = example['image']
    if spec.augment == 'cifar':
      image = image_ops.pad_crop_flip(image, example_seed)
    elif spec.augment == 'inception':
      image = image_ops.decode_and_random_crop(image, image_size, example_seed)
    return {'image': image_ops.normalize(image, mean, std),
            'label': tf.cast(example['label'], tf.int32)}

  return preprocess


def _eval_preprocess(name: str, spec: base.DatasetSpec,
                     image_size: int) -> Callable[..., base.Batch]:
  """example -> normalized (center-cropped) example with mask 1."""
  mean, std = base.MEAN_STD[name]

  def preprocess(example: dict[str, tf.Tensor]):
    image = example['image']
    if spec.augment == 'inception':
      image = image_ops.decode_and_center_crop(image, image_size)
    return {'image': image_ops.normalize(image, mean, std),
            'label': tf.cast(example['label'], tf.int32),
            'mask': tf.constant(1.0, tf.float32)}

  return preprocess


def get_data(config: ml_collections.ConfigDict, *, seed: int,
             process_index: int, process_count: int) -> base.Data:
  """A tfds image dataset as train and eval streams for this process.

  Args:
    config: the data config (see
      `rigl_jax.experiment.data.default_data_config`).
    seed: data seed: file order, shuffling and augmentation depend only on
      it (and on the process index).
    process_index: this process's index.
    process_count: number of processes.

  Returns:
    The `Data`; eval splits are 'test', or 'validation' for ImageNet.
  """
  name = config.name
  spec = base.SPECS[name]
  image_size = int(config.get('image_size', 224))
  image_shape = spec.image_shape or (image_size, image_size, 3)
  local_batch = base.per_process_batch_size(config.batch_size, process_count)
  local_eval_batch = base.per_process_batch_size(
      config.eval_batch_size, process_count, 'eval_batch_size')
  builder = tfds.builder(name, data_dir=config.get('tfds_data_dir'))
  decoders = ({'image': tfds.decode.SkipDecoding()}
              if spec.augment == 'inception' else None)

  try:
    total_train = _num_examples(builder, 'train')
  except AssertionError as e:  # What tfds raises for unprepared data.
    raise ValueError(
        f'tfds dataset {name!r} is not prepared in {builder.data_dir}; set '
        'config.data.tfds_data_dir to a folder where it is (prepare one with '
        f'`tfds build {name} --data_dir=DIR`; imagenet2012 needs its manual '
        'download)') from e
  num_train = max(1, int(total_train * config.get('train_fraction', 1.0)))
  train_split = 'train' if num_train == total_train else f'train[:{num_train}]'
  num_eval = {s: _num_examples(builder, s) for s in spec.eval_splits}
  train_fn = _train_preprocess(name, spec, image_size, seed, process_index)
  eval_fn = _eval_preprocess(name, spec, image_size)
  eval_cache: dict[str, tf.data.Dataset] = {}

  train_shard = tfds.split_for_jax_process(
      train_split, process_index=process_index, process_count=process_count,
      drop_remainder=True)
  # tfds.even_splits with drop_remainder: every process gets n // count.
  local_train = num_train // process_count

  def train_batches(start_step: int) -> Iterator[base.Batch]:
    if start_step < 0:
      raise ValueError(f'start_step must be >= 0, got {start_step}')
    ds = builder.as_dataset(
        split=train_shard, shuffle_files=True, decoders=decoders,
        read_config=tfds.ReadConfig(shuffle_seed=seed))
    if spec.cache:
      ds = ds.cache()
    first = start_step * local_batch  # this process's example number
    epoch, offset = resume_position(first, local_train)

    def one_epoch(e):  # epoch e's order depends on (seed, e) alone
      return ds.shuffle(config.shuffle_buffer,
                        seed=tf.cast(seed, tf.int64) * 1_000_003 + e)

    stream = tf.data.Dataset.range(epoch, _EPOCHS).flat_map(one_epoch)
    # Skips within one epoch only: the cost of a resume does not grow
    # with the step.
    stream = stream.skip(offset).enumerate(start=first)
    stream = stream.map(train_fn, num_parallel_calls=_AUTOTUNE,
                        deterministic=True)
    stream = stream.batch(local_batch, drop_remainder=True)
    return stream.prefetch(_AUTOTUNE).as_numpy_iterator()

  def eval_dataset(split: str) -> tf.data.Dataset:
    # Every process yields the same number of full batches; shards differ by
    # at most one example, so pad each to the largest shard's batch count.
    largest_shard = -(-num_eval[split] // process_count)
    num_batches = -(-largest_shard // local_eval_batch)
    ds = builder.as_dataset(
        split=tfds.split_for_jax_process(
            split, process_index=process_index, process_count=process_count),
        shuffle_files=False, decoders=decoders)
    ds = ds.map(eval_fn, num_parallel_calls=_AUTOTUNE)
    padding = tf.data.Dataset.from_tensors({
        'image': tf.zeros(image_shape, tf.float32),
        'label': tf.constant(0, tf.int32),
        'mask': tf.constant(0.0, tf.float32)}).repeat()
    ds = ds.concatenate(padding).take(num_batches * local_eval_batch)
    ds = ds.batch(local_eval_batch, drop_remainder=True)
    return ds.cache() if spec.cache else ds

  def eval_batches(split: str) -> Iterator[base.Batch]:
    base.check_split(split, num_eval)
    if split not in eval_cache:
      eval_cache[split] = eval_dataset(split)
    return eval_cache[split].prefetch(_AUTOTUNE).as_numpy_iterator()

  info = base.DatasetInfo(
      name=name, kind='image', input_shape=tuple(image_shape),
      num_classes=spec.num_classes, num_train=num_train, num_eval=num_eval)
  return base.Data(info, train_batches, eval_batches)
