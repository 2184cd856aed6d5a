"""MobileNet v1 and v2 with a width multiplier.

Depthwise convolutions use `feature_group_count`, so their kernels are
(3, 3, 1, C). Parameter paths:

* v1: `conv_init`, `bn_init`, `block{i}/{dw_conv,dw_bn,pw_conv,pw_bn}` for
  i = 1..13, `head`.
* v2: `conv_init`, `bn_init`,
  `block{i}/{expand_conv,expand_bn,dw_conv,dw_bn,project_conv,project_bn}` for
  i = 0..16 (block 0 has no expansion), `conv_final`, `bn_final`, `head`.

References:
  Howard et al., MobileNets: Efficient Convolutional Neural Networks for Mobile
    Vision Applications, 2017.
  Sandler et al., MobileNetV2: Inverted Residuals and Linear Bottlenecks,
    CVPR 2018.
"""

import functools
from typing import Optional

import flax.linen as nn
import jax.numpy as jnp

from rigl_jax.experiment.models import common

# (filters, stride) of the 13 depthwise-separable blocks of MobileNet v1.
_V1_BLOCKS = (
    (64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2),
    (512, 1), (512, 1), (512, 1), (512, 1), (512, 1), (1024, 2), (1024, 1),
)

# (expansion, filters, repeats, first stride) of MobileNet v2's stages.
_V2_STAGES = (
    (1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2),
    (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1),
)


def make_divisible(value: float, divisor: int = 8,
                   min_value: Optional[int] = None) -> int:
  """Rounds `value` to a multiple of `divisor`, losing at most 10%."""
  min_value = min_value or divisor
  new_value = max(min_value, int(value + divisor / 2) // divisor * divisor)
  if new_value < 0.9 * value:
    new_value += divisor
  return new_value


def _conv(dtype: common.Dtype) -> common.ModuleDef:
  return functools.partial(
      nn.Conv, use_bias=False, dtype=dtype,
      kernel_init=common.conv_kernel_init)


def _depthwise(conv: common.ModuleDef, channels: int, stride: int,
               name: str) -> nn.Module:
  """A 3x3 depthwise convolution (one filter per input channel)."""
  return conv(channels, (3, 3), (stride, stride), padding=common.PAD_3X3,
              feature_group_count=channels, name=name)


class DepthwiseSeparableBlock(nn.Module):
  """3x3 depthwise conv, BN, ReLU6, then 1x1 pointwise conv, BN, ReLU6."""

  filters: int
  conv: common.ModuleDef
  norm: common.ModuleDef
  stride: int = 1

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    x = _depthwise(self.conv, x.shape[-1], self.stride, 'dw_conv')(x)
    x = nn.relu6(self.norm(name='dw_bn')(x))
    x = self.conv(self.filters, (1, 1), name='pw_conv')(x)
    return nn.relu6(self.norm(name='pw_bn')(x))


class MobileNetV1(nn.Module):
  """MobileNet v1.

  Attributes:
    num_classes: number of output logits.
    width_multiplier: scales the filters of every layer (alpha).
    dropout_rate: dropout before the classifier.
    dtype: computation dtype (parameters stay float32).
  """

  num_classes: int
  width_multiplier: float = 1.0
  dropout_rate: float = 0.0
  dtype: common.Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool = True) -> jnp.ndarray:
    """Maps (B, H, W, C) images to (B, num_classes) float32 logits."""
    conv = _conv(self.dtype)
    norm = common.batch_norm(train, self.dtype)
    x = conv(int(32 * self.width_multiplier), (3, 3), (2, 2),
             padding=common.PAD_3X3, name='conv_init')(x)
    x = nn.relu6(norm(name='bn_init')(x))
    for i, (filters, stride) in enumerate(_V1_BLOCKS, start=1):
      x = DepthwiseSeparableBlock(
          int(filters * self.width_multiplier), conv=conv, norm=norm,
          stride=stride, name=f'block{i}')(x)
    x = common.global_avg_pool(x)
    x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
    x = nn.Dense(self.num_classes, dtype=self.dtype,
                 kernel_init=common.head_kernel_init, name='head')(x)
    return jnp.asarray(x, jnp.float32)


class InvertedResidualBlock(nn.Module):
  """1x1 expansion, 3x3 depthwise, linear 1x1 projection (+ identity)."""

  filters: int
  expansion: int
  conv: common.ModuleDef
  norm: common.ModuleDef
  stride: int = 1

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    in_channels = x.shape[-1]
    y = x
    if self.expansion != 1:
      y = self.conv(in_channels * self.expansion, (1, 1),
                    name='expand_conv')(y)
      y = nn.relu6(self.norm(name='expand_bn')(y))
    y = _depthwise(self.conv, y.shape[-1], self.stride, 'dw_conv')(y)
    y = nn.relu6(self.norm(name='dw_bn')(y))
    y = self.conv(self.filters, (1, 1), name='project_conv')(y)
    y = self.norm(name='project_bn')(y)
    if self.stride == 1 and in_channels == self.filters:
      y = x + y
    return y


class MobileNetV2(nn.Module):
  """MobileNet v2.

  Channel counts follow the reference: `make_divisible(c * alpha, 8)`, and the
  last 1x1 convolution keeps 1280 filters unless alpha > 1.

  Attributes:
    num_classes: number of output logits.
    width_multiplier: scales the filters of every layer (alpha).
    dropout_rate: dropout before the classifier.
    dtype: computation dtype (parameters stay float32).
  """

  num_classes: int
  width_multiplier: float = 1.0
  dropout_rate: float = 0.0
  dtype: common.Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool = True) -> jnp.ndarray:
    """Maps (B, H, W, C) images to (B, num_classes) float32 logits."""
    alpha = self.width_multiplier
    conv = _conv(self.dtype)
    norm = common.batch_norm(train, self.dtype)
    x = conv(make_divisible(32 * alpha), (3, 3), (2, 2),
             padding=common.PAD_3X3, name='conv_init')(x)
    x = nn.relu6(norm(name='bn_init')(x))
    block = 0
    for expansion, filters, repeats, first_stride in _V2_STAGES:
      for j in range(repeats):
        x = InvertedResidualBlock(
            make_divisible(filters * alpha), expansion=expansion, conv=conv,
            norm=norm, stride=first_stride if j == 0 else 1,
            name=f'block{block}')(x)
        block += 1
    last_filters = make_divisible(1280 * alpha) if alpha > 1.0 else 1280
    x = conv(last_filters, (1, 1), name='conv_final')(x)
    x = nn.relu6(norm(name='bn_final')(x))
    x = common.global_avg_pool(x)
    x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
    x = nn.Dense(self.num_classes, dtype=self.dtype,
                 kernel_init=common.head_kernel_init, name='head')(x)
    return jnp.asarray(x, jnp.float32)
