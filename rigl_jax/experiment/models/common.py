"""Building blocks shared by the model zoo."""

import functools
from typing import Any, Callable

import flax.linen as nn
import jax.numpy as jnp

ModuleDef = Callable[..., nn.Module]
Dtype = Any

# Symmetric padding of 1 for 3x3 convolutions, as the TF and PyTorch references
# (flax's 'SAME' pads (0, 1) when the stride is 2).
PAD_3X3 = ((1, 1), (1, 1))

# He et al. (2015) normal initialisation with fan_out, as torchvision's
# ResNet / WideResNet / MobileNet (`kaiming_normal_(mode='fan_out')`).
conv_kernel_init = nn.initializers.variance_scaling(2.0, 'fan_out', 'normal')

# N(0, 0.01) for the classifier, as the TF ResNet reference and torchvision's
# MobileNet v2 use.
head_kernel_init = nn.initializers.normal(stddev=0.01)


def batch_norm(train: bool, dtype: Dtype) -> ModuleDef:
  """BatchNorm with running stats in `batch_stats` (momentum 0.9, eps 1e-5).

  Args:
    train: whether batch statistics are used (and running stats updated).
    dtype: computation dtype.

  Returns:
    A constructor of `nn.BatchNorm` taking the remaining fields.
  """
  return functools.partial(
      nn.BatchNorm,
      use_running_average=not train,
      momentum=0.9,
      epsilon=1e-5,
      dtype=dtype,
  )


def global_avg_pool(x: jnp.ndarray) -> jnp.ndarray:
  """Averages over the spatial axes of a (B, H, W, C) batch."""
  return jnp.mean(x, axis=(1, 2))
