"""ResNet-20 for CIFAR (He et al., 2016, Section 4.2), as the ticket papers use.

Three stages of basic blocks with 16, 32 and 64 filters on 32x32 inputs, a
3x3 stem and global average pooling. The first block of stages 2 and 3
downsamples and takes a 1x1 convolution + BatchNorm shortcut (option B, as
in Frankle et al.'s lottery-ticket code); ResNet-20 has 3 blocks per stage
and 272,474 parameters on CIFAR-10 (0.27M).

Parameter paths: `conv_init`, `bn_init`, `stage{s}_block{b}/{conv,bn}{1,2}`,
`stage{s}_block{b}/proj_conv`, `stage{s}_block{b}/proj_bn` and `head`.

References:
  He et al., Deep Residual Learning for Image Recognition, CVPR 2016.
  Frankle et al., Stabilizing the Lottery Ticket Hypothesis, 2019.
"""

import functools
from typing import Sequence

import flax.linen as nn
import jax.numpy as jnp

from rigl_jax.experiment.models import common
from rigl_jax.experiment.models.resnet import ResNetBlock


class CifarResNet(nn.Module):
  """ResNet-(6n + 2) for 32x32 inputs.

  Attributes:
    num_classes: number of output logits.
    stage_sizes: blocks per stage (n, n, n).
    num_filters: filters of the first stage (doubled at each stage).
    dtype: computation dtype (parameters stay float32).
  """

  num_classes: int
  stage_sizes: Sequence[int] = (3, 3, 3)
  num_filters: int = 16
  dtype: common.Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool = True) -> jnp.ndarray:
    """Maps (B, H, W, C) images to (B, num_classes) float32 logits."""
    conv = functools.partial(nn.Conv, use_bias=False, dtype=self.dtype,
                             kernel_init=common.conv_kernel_init)
    norm = common.batch_norm(train, self.dtype)
    x = conv(self.num_filters, (3, 3), padding=common.PAD_3X3,
             name='conv_init')(x)
    x = nn.relu(norm(name='bn_init')(x))
    for i, block_size in enumerate(self.stage_sizes):
      for j in range(block_size):
        strides = (2, 2) if i > 0 and j == 0 else (1, 1)
        x = ResNetBlock(self.num_filters * 2**i, conv=conv, norm=norm,
                        act=nn.relu, strides=strides,
                        name=f'stage{i + 1}_block{j}')(x)
    x = common.global_avg_pool(x)
    x = nn.Dense(self.num_classes, dtype=self.dtype, name='head')(x)
    return jnp.asarray(x, jnp.float32)


ResNet20 = functools.partial(CifarResNet, stage_sizes=(3, 3, 3))
