"""A small CNN that trains in minutes on a 2-core CPU (e.g. Fashion-MNIST).

Parameter paths: `conv_init`, `conv{i}` (i >= 1), `dense0` (if any), `head`.
"""

import functools
from typing import Sequence

import flax.linen as nn
import jax.numpy as jnp

from rigl_jax.experiment.models import common


class SmallCNN(nn.Module):
  """Stages of 3x3 conv + ReLU + 2x2 max pool, then an optional hidden dense.

  Attributes:
    num_classes: number of output logits.
    channels: filters of each conv stage; the first is `conv_init`.
    hidden_size: width of the hidden dense layer (0: none).
    dtype: computation dtype (parameters stay float32).
  """

  num_classes: int
  channels: Sequence[int] = (16, 32)
  hidden_size: int = 128
  dtype: common.Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool = True) -> jnp.ndarray:
    """Maps (B, H, W, C) images to (B, num_classes) float32 logits."""
    del train  # No train/eval difference.
    conv = functools.partial(nn.Conv, kernel_size=(3, 3), dtype=self.dtype)
    for i, filters in enumerate(self.channels):
      x = conv(filters, name='conv_init' if i == 0 else f'conv{i}')(x)
      x = nn.max_pool(nn.relu(x), (2, 2), strides=(2, 2))
    x = x.reshape((x.shape[0], -1))
    if self.hidden_size:
      x = nn.relu(nn.Dense(self.hidden_size, dtype=self.dtype,
                           name='dense0')(x))
    x = nn.Dense(self.num_classes, dtype=self.dtype, name='head')(x)
    return jnp.asarray(x, jnp.float32)
