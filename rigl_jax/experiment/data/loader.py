"""`get_data`: a dataset, by config, as train and eval streams."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import ml_collections

from rigl_jax.experiment.data import base
from rigl_jax.experiment.data import config as config_lib
from rigl_jax.experiment.data import fashion_mnist
from rigl_jax.experiment.data import shakespeare

def resolve_config(config: Mapping[str, Any] | ml_collections.ConfigDict,
                   ) -> ml_collections.ConfigDict:
  """Fills the fields a data config leaves out from the dataset's defaults.

  Args:
    config: a data config with at least `name`.

  Returns:
    A new ConfigDict with every field of `default_data_config(config.name)`.

  Raises:
    ValueError: unknown dataset or source, or a field out of range.
  """
  given = (config.to_dict() if isinstance(config, ml_collections.ConfigDict)
           else dict(config))
  name = given.get('name')
  config_lib.check_name(name)
  merged = config_lib.default_data_config(name).to_dict()
  merged.update(given)
  resolved = ml_collections.ConfigDict(merged)
  if resolved.source not in base.SOURCES:
    raise ValueError(f'unknown data source {resolved.source!r}; valid '
                     f'sources: {", ".join(base.SOURCES)}')
  if resolved.source not in base.SPECS[name].sources:
    raise ValueError(f'dataset {name!r} cannot be read from source '
                     f'{resolved.source!r}; valid sources for it: '
                     f'{", ".join(base.SPECS[name].sources)}')
  if not 0.0 < resolved.train_fraction <= 1.0:
    raise ValueError(f'train_fraction must be in (0, 1], got '
                     f'{resolved.train_fraction}')
  return resolved


def get_data(config: Mapping[str, Any] | ml_collections.ConfigDict, *,
             seed: int, process_index: int | None = None,
             process_count: int | None = None) -> base.Data:
  """Loads a dataset as this process's train and eval batch streams.

  Args:
    config: the experiment's `config.data` (see `default_data_config`;
      missing fields take the dataset's defaults).
    seed: data seed (>= 0): the train order and augmentation depend only on
      it, and on the process index.
    process_index: this process's index; `jax.process_index()` if None.
    process_count: number of processes; `jax.process_count()` if None.

  Returns:
    The `Data`: `info`, `train_batches(start_step)` and `eval_batches(split)`.
    Each process gets `batch_size // process_count` examples of every global
    batch.

  Raises:
    ValueError: unknown dataset or source, a batch size not divisible by the
      process count, a bad field, or a corrupted bundled file.
  """
  config = resolve_config(config)
  if process_index is None:
    process_index = jax.process_index()
  if process_count is None:
    process_count = jax.process_count()
  if not 0 <= process_index < process_count:
    raise ValueError(f'process_index must be in [0, {process_count}), got '
                     f'{process_index}')
  if seed < 0:
    raise ValueError(f'seed must be >= 0, got {seed}')
  base.per_process_batch_size(config.batch_size, process_count)
  base.per_process_batch_size(config.eval_batch_size, process_count,
                              'eval_batch_size')
  hosts = dict(seed=seed, process_index=process_index,
               process_count=process_count)
  if config.source == 'tfds':
    # Imported here so that bundled data never loads TensorFlow.
    # pylint: disable=g-import-not-at-top
    if config.name in base.TOKENIZED:
      from rigl_jax.experiment.data import tfds_text
      return tfds_text.get_data(config, **hosts)
    from rigl_jax.experiment.data import tfds_images
    return tfds_images.get_data(config, **hosts)
  sizes = dict(batch_size=config.batch_size,
               eval_batch_size=config.eval_batch_size,
               train_fraction=config.train_fraction)
  if config.name == 'shakespeare':
    return shakespeare.get_data(seq_len=config.seq_len, **sizes, **hosts)
  return fashion_mnist.get_data(**sizes, **hosts)
