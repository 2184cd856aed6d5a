"""Datasets for rigl_jax: bundled Fashion-MNIST and Shakespeare, and tfds.

`get_data(config.data, seed=...)` returns a `Data`: static `info`, an
infinite, resumable `train_batches(start_step)` and a padded, masked,
one-pass `eval_batches(split)`, each yielding this process's share of every
global batch as numpy arrays:

- images: {'image': float32 (B, H, W, C) normalized, 'label': int32 (B,)}
- text: {'inputs': int32 (B, T), 'targets': int32 (B, T)} (next characters)
- eval batches add 'mask': float32 (B,), 1 for real examples, 0 for padding.

Example:

  >>> from rigl_jax.experiment import data
  >>> config = data.default_data_config('fashion_mnist')
  >>> ds = data.get_data(config, seed=0, process_index=0, process_count=1)
  >>> ds.info.input_shape, ds.info.num_train, ds.info.num_eval
  ((28, 28, 1), 60000, {'test': 10000})
  >>> next(ds.train_batches(0))['image'].shape
  (128, 28, 28, 1)
"""

from rigl_jax.experiment.data.base import Data
from rigl_jax.experiment.data.base import DATASETS
from rigl_jax.experiment.data.base import DatasetInfo
from rigl_jax.experiment.data.base import registry_info
from rigl_jax.experiment.data.base import TOKENIZED
from rigl_jax.experiment.data.config import default_data_config
from rigl_jax.experiment.data.loader import get_data

__all__ = ('DATASETS', 'Data', 'DatasetInfo', 'TOKENIZED',
           'default_data_config', 'get_data', 'registry_info')
