"""Types shared by every dataset: `DatasetInfo`, `Data`, and batch sizing."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import NamedTuple

import numpy as np

Batch = dict[str, np.ndarray]

class DatasetSpec(NamedTuple):
  """Everything rigl_jax knows about a dataset before loading it.

  Attributes:
    kind: ``'image'`` or ``'text'``.
    image_shape: one example's shape for fixed-size images; None where
      ``config.image_size`` sets it (ImageNet, 3 channels) or for text.
    channels: image channels (0 for text).
    num_classes: classes, or the vocabulary size for text.
    num_train: examples (characters for text) in the full train split, for
      step counts that must not load the data (`rigl_jax.analysis`).
    eval_splits: the eval split names.
    mean_std: per-channel ``(mean, std)`` of pixels scaled to [0, 1].
    sources: where it can be read from, the default first (`SOURCES`).
    augment: ``'none'``, ``'cifar'`` or ``'inception'`` (tfds images).
    cache: small enough to cache decoded in memory (tfds).
    batch_size, eval_batch_size, image_size, seq_len, shuffle_buffer: the
      defaults of `default_data_config`.
  """

  kind: str
  image_shape: tuple[int, int, int] | None
  channels: int
  num_classes: int
  num_train: int
  eval_splits: tuple[str, ...]
  mean_std: tuple[tuple[float, ...], tuple[float, ...]] | None
  sources: tuple[str, ...]
  augment: str
  cache: bool
  batch_size: int
  eval_batch_size: int
  image_size: int
  seq_len: int
  shuffle_buffer: int


# The dataset registry: the one place for dataset facts (the loaders, the
# default configs, validation and the FLOPs report read it). Shakespeare's
# num_train is the bundled corpus's 90% train part, in characters.
SPECS: dict[str, DatasetSpec] = {
    'fashion_mnist': DatasetSpec(
        'image', (28, 28, 1), 1, 10, 60_000, ('test',),
        ((0.2860,), (0.3530,)), ('bundled', 'tfds'), 'none', True,
        128, 1000, 28, 0, 60_000),
    'mnist': DatasetSpec(
        'image', (28, 28, 1), 1, 10, 60_000, ('test',),
        ((0.1307,), (0.3081,)), ('tfds',), 'none', True,
        128, 1000, 28, 0, 60_000),
    'cifar10': DatasetSpec(
        'image', (32, 32, 3), 3, 10, 50_000, ('test',),
        ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)), ('tfds',),
        'cifar', True, 128, 1000, 32, 0, 50_000),
    'cifar100': DatasetSpec(
        'image', (32, 32, 3), 3, 100, 50_000, ('test',),
        ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)), ('tfds',),
        'cifar', True, 128, 1000, 32, 0, 50_000),
    'imagenet2012': DatasetSpec(
        'image', None, 3, 1000, 1_281_167, ('validation',),
        ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)), ('tfds',),
        'inception', False, 4096, 1024, 224, 0, 16_384),
    'shakespeare': DatasetSpec(
        'text', None, 0, 84, 4_551_478, ('validation', 'test'), None,
        ('bundled',), 'none', False, 64, 256, 0, 128, 0),
    # One Billion Word (Chelba et al. 2013), tokenized with a SentencePiece
    # vocabulary trained on it (`tfds_text`); num_classes is the default
    # vocabulary size and the train size in tokens is known only once
    # tokenized (0). Batch 256 of 128 tokens as the Flax lm1b example.
    'lm1b': DatasetSpec(
        'text', None, 0, 30_000, 0, ('test',), None, ('tfds',), 'none',
        False, 256, 256, 0, 128, 0),
}

# Valid values of `config.data.name`.
DATASETS: tuple[str, ...] = tuple(SPECS)

# Valid values of `config.data.source`.
SOURCES: tuple[str, ...] = ('bundled', 'tfds')

# Datasets that ship with rigl_jax (source 'bundled').
BUNDLED: tuple[str, ...] = tuple(n for n, s in SPECS.items()
                                 if 'bundled' in s.sources)

# Per-channel (mean, std) of pixel values scaled to [0, 1].
MEAN_STD = {n: s.mean_std for n, s in SPECS.items() if s.mean_std}

# Text datasets read from tfds and tokenized with a trained vocabulary
# (`tfds_text`); their configs carry `vocab_size`, `max_corpus_chars` and
# `token_dir`.
TOKENIZED: tuple[str, ...] = tuple(
    n for n, s in SPECS.items() if s.kind == 'text' and 'tfds' in s.sources)


def num_classes(data_config) -> int:
  """Classes, or the vocabulary size of text, of a data config's dataset."""
  if data_config.name in TOKENIZED:
    return int(data_config.get('vocab_size', SPECS[data_config.name]
                               .num_classes))
  return SPECS[data_config.name].num_classes


class DatasetInfo(NamedTuple):
  """Static facts about a dataset, as the model and the loop need them.

  Attributes:
    name: one of `DATASETS`.
    kind: 'image' or 'text'.
    input_shape: shape of one example, e.g. (28, 28, 1) or (seq_len,).
    num_classes: number of classes, or the vocabulary size for text.
    num_train: examples in the (possibly `train_fraction`-cut) train set, over
      all processes.
    num_eval: eval split name -> number of examples in it, over all processes.
  """

  name: str
  kind: str
  input_shape: tuple[int, ...]
  num_classes: int
  num_train: int
  num_eval: dict[str, int]


def check_name(name: str) -> None:
  """Raises ValueError unless `name` is one of `DATASETS`."""
  if name not in DATASETS:
    raise ValueError(f'unknown dataset {name!r}; valid names: '
                     f'{", ".join(DATASETS)}')


def registry_info(data_config) -> DatasetInfo:
  """The `DatasetInfo` that the registry (`SPECS`) and a data config give,
  without reading the data: for FLOPs counts and for timing a config's step
  on synthetic batches.

  The input shape is ``(image_size, image_size, channels)`` for images and
  ``(seq_len,)`` for text; ``num_train`` is in examples (windows of
  ``seq_len`` for text), 0 where only the tokenized data knows it; no eval
  splits.

  Args:
    data_config: ``config.data``.

  Returns:
    A `DatasetInfo`.

  Raises:
    ValueError: an unknown dataset name, naming the valid ones.

  Example:
    >>> import ml_collections
    >>> registry_info(ml_collections.ConfigDict(
    ...     {'name': 'cifar10', 'image_size': 32})).input_shape
    (32, 32, 3)
  """
  name = data_config.name
  check_name(name)
  spec = SPECS[name]
  if spec.kind == 'text':
    seq_len = int(data_config.seq_len)
    shape, num_train = (seq_len,), spec.num_train // seq_len
  else:
    size = int(data_config.image_size)
    shape, num_train = (size, size, spec.channels), spec.num_train
  return DatasetInfo(name=name, kind=spec.kind, input_shape=shape,
                     num_classes=num_classes(data_config),
                     num_train=num_train, num_eval={})


class Data(NamedTuple):
  """A dataset as two batch streams for this process.

  Attributes:
    info: static facts about the dataset.
    train_batches: `start_step -> iterator` over this process's share of the
      global train batches, infinite and deterministic given the seed; batch k
      of the stream is the same whether the stream starts at 0 and k batches
      are skipped or it starts at `start_step=k`.
    eval_batches: `split -> iterator`, one finite pass over an eval split
      (a key of `info.num_eval`); every batch is full size and carries a
      float32 'mask' (1 for real examples, 0 for padding).
  """

  info: DatasetInfo
  train_batches: Callable[[int], Iterator[Batch]]
  eval_batches: Callable[[str], Iterator[Batch]]


def per_process_batch_size(batch_size: int, process_count: int,
                           what: str = 'batch_size') -> int:
  """Splits a global batch size evenly over processes.

  Args:
    batch_size: the global batch size.
    process_count: number of processes (hosts).
    what: the config field's name, for the error message.

  Returns:
    The per-process batch size.

  Raises:
    ValueError: the batch size is not positive or not divisible.
  """
  if batch_size <= 0:
    raise ValueError(f'{what} must be positive, got {batch_size}')
  if batch_size % process_count:
    raise ValueError(
        f'{what}={batch_size} is not divisible by the process count '
        f'{process_count}; choose a multiple of {process_count}')
  return batch_size // process_count


def check_split(split: str, num_eval: dict[str, int]) -> None:
  """Raises ValueError unless `split` is one of the eval splits.

  Args:
    split: the requested split name.
    num_eval: the dataset's eval splits (names -> sizes).
  """
  if split not in num_eval:
    raise ValueError(f'unknown eval split {split!r}; valid splits: '
                     f'{", ".join(sorted(num_eval))}')
