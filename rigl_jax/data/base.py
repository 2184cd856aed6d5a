"""Types shared by every dataset: `DatasetInfo`, `Data`, and batch sizing."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import NamedTuple

import numpy as np

Batch = dict[str, np.ndarray]

# Valid values of `config.data.name`.
DATASETS: tuple[str, ...] = ('fashion_mnist', 'mnist', 'cifar10', 'cifar100',
                             'imagenet2012', 'shakespeare')

# Valid values of `config.data.source`.
SOURCES: tuple[str, ...] = ('bundled', 'tfds')

# Datasets that ship with rigl_jax (source 'bundled').
BUNDLED: tuple[str, ...] = ('fashion_mnist', 'shakespeare')

# Per-channel (mean, std) of pixel values scaled to [0, 1].
MEAN_STD: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    'mnist': ((0.1307,), (0.3081,)),
    'fashion_mnist': ((0.2860,), (0.3530,)),
    'cifar10': ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    'cifar100': ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
    'imagenet2012': ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
}


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
