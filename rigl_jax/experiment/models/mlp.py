"""A multi-layer perceptron on flattened inputs.

Parameter paths: `dense{i}` for the hidden layers (i from 0), `head`.
"""

from typing import Sequence

import flax.linen as nn
import jax.numpy as jnp

from rigl_jax.experiment.models import common


class MLP(nn.Module):
  """Fully connected ReLU network; any input is flattened per example.

  Attributes:
    num_classes: number of output logits.
    hidden_sizes: widths of the hidden layers.
    dtype: computation dtype (parameters stay float32).
  """

  num_classes: int
  hidden_sizes: Sequence[int] = (256, 128)
  dtype: common.Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool = True) -> jnp.ndarray:
    """Maps (B, ...) inputs to (B, num_classes) float32 logits."""
    del train  # No train/eval difference.
    x = x.reshape((x.shape[0], -1))
    for i, size in enumerate(self.hidden_sizes):
      x = nn.relu(nn.Dense(size, dtype=self.dtype, name=f'dense{i}')(x))
    x = nn.Dense(self.num_classes, dtype=self.dtype, name='head')(x)
    return jnp.asarray(x, jnp.float32)
