"""LeNet-300-100 and LeNet-5 (Caffe variant), the sparse-training baselines.

Parameter paths: LeNet-300-100 is an `MLP` (`dense0`, `dense1`, `head`);
LeNet-5 has `conv_init`, `conv1`, `dense0`, `head`.

References:
  - LeCun et al., Gradient-based learning applied to document recognition,
    1998.
  - Han et al., Learning both Weights and Connections for Efficient Neural
    Networks, NeurIPS 2015 (the LeNet-300-100 / LeNet-5 pruning baselines).
"""

import functools

import flax.linen as nn
import jax.numpy as jnp

from rigl_jax.experiment.models import common
from rigl_jax.experiment.models import mlp

# 784-300-100-10: 266,610 parameters on MNIST.
LeNet300100 = functools.partial(mlp.MLP, hidden_sizes=(300, 100))


class LeNet5(nn.Module):
  """Caffe's LeNet: conv 20@5x5, pool, conv 50@5x5, pool, fc 500, ReLU, fc.

  As in Caffe's `lenet_train_test.prototxt`, the convolutions are VALID and
  only the hidden dense layer has a ReLU (max pooling is the nonlinearity after
  each convolution). 431,080 parameters on 28x28x1 inputs.

  Attributes:
    num_classes: number of output logits.
    dtype: computation dtype (parameters stay float32).
  """

  num_classes: int
  dtype: common.Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool = True) -> jnp.ndarray:
    """Maps (B, H, W, C) images to (B, num_classes) float32 logits."""
    del train  # No train/eval difference.
    conv = functools.partial(nn.Conv, padding='VALID', dtype=self.dtype)
    x = conv(20, (5, 5), name='conv_init')(x)
    x = nn.max_pool(x, (2, 2), strides=(2, 2))
    x = conv(50, (5, 5), name='conv1')(x)
    x = nn.max_pool(x, (2, 2), strides=(2, 2))
    x = x.reshape((x.shape[0], -1))
    x = nn.relu(nn.Dense(500, dtype=self.dtype, name='dense0')(x))
    x = nn.Dense(self.num_classes, dtype=self.dtype, name='head')(x)
    return jnp.asarray(x, jnp.float32)
