"""Batch streams over a dataset held in memory as numpy arrays.

Training draws one permutation of the examples per epoch from
`np.random.default_rng([seed, epoch])` and walks it in global batches (the
last partial batch of an epoch is dropped). Step `s` therefore maps to epoch
`s // steps_per_epoch` directly, so starting at any step is exact and costs
one permutation, not a replay. Each process takes its contiguous slice of
every global batch.

Evaluation walks the examples in order in global batches; the last one is
padded (zeros, `mask` 0) so that every batch, on every process, is full.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np

from rigl_jax.experiment.data import base

# (epoch, example indices) -> batch of those examples.
GetBatch = Callable[[int, np.ndarray], base.Batch]


def epoch_permutation(seed: int, epoch: int, num_examples: int) -> np.ndarray:
  """The order in which an epoch visits the examples.

  Args:
    seed: the data seed (non-negative).
    epoch: the epoch number (non-negative).
    num_examples: size of the train set.

  Returns:
    A permutation of `range(num_examples)`.
  """
  return np.random.default_rng([seed, epoch]).permutation(num_examples)


def train_stream(num_examples: int, get_batch: GetBatch, *, batch_size: int,
                 seed: int, start_step: int, process_index: int,
                 process_count: int) -> Iterator[base.Batch]:
  """Infinite train batches for one process, starting at `start_step`.

  Args:
    num_examples: size of the train set.
    get_batch: gathers the examples at the given indices (of the given epoch).
    batch_size: the global batch size.
    seed: the data seed (non-negative).
    start_step: index of the first global batch to yield.
    process_index: this process's index.
    process_count: number of processes.

  Returns:
    An iterator over this process's `batch_size // process_count` examples
    of each step.

  Raises:
    ValueError: the train set is smaller than a batch, or bad sizes.
  """
  if num_examples < batch_size:
    raise ValueError(
        f'the train set has {num_examples} examples, fewer than the global '
        f'batch_size {batch_size}; lower batch_size or raise train_fraction')
  if start_step < 0:
    raise ValueError(f'start_step must be >= 0, got {start_step}')
  local = base.per_process_batch_size(batch_size, process_count)
  offset = process_index * local
  steps_per_epoch = num_examples // batch_size

  def batches() -> Iterator[base.Batch]:
    epoch, order = -1, np.empty(0, np.int64)
    step = start_step
    while True:
      batch_epoch, position = divmod(step, steps_per_epoch)
      if batch_epoch != epoch:
        epoch = batch_epoch
        order = epoch_permutation(seed, epoch, num_examples)
      start = position * batch_size + offset
      yield get_batch(epoch, order[start:start + local])
      step += 1

  return batches()


def eval_stream(num_examples: int, get_batch: GetBatch, *, batch_size: int,
                process_index: int,
                process_count: int) -> Iterator[base.Batch]:
  """One pass over an eval split for one process, padded to full batches.

  Args:
    num_examples: size of the split.
    get_batch: gathers the examples at the given indices (epoch is 0).
    batch_size: the global eval batch size.
    process_index: this process's index.
    process_count: number of processes.

  Returns:
    An iterator over `ceil(num_examples / batch_size)` batches of
    `batch_size // process_count` examples, each with a float32 'mask'
    (1 real, 0 padding; padded examples are all zeros).
  """
  local = base.per_process_batch_size(batch_size, process_count,
                                      'eval_batch_size')

  def batches() -> Iterator[base.Batch]:
    for start in range(0, num_examples, batch_size):
      indices = start + process_index * local + np.arange(local)
      real = indices < num_examples
      batch = get_batch(0, np.where(real, indices, 0))
      for value in batch.values():
        value[~real] = 0
      batch['mask'] = real.astype(np.float32)
      yield batch

  return batches()
