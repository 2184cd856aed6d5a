"""ResNet v1 for ImageNet (He et al., 2016), after flax `examples/imagenet`.

The stride of a downsampling bottleneck block sits on its 3x3 convolution
("v1.5", as in the TF/TPU reference that RigL trained and in torchvision).

Parameter paths: `conv_init`, `bn_init`, `stage{s}_block{b}/conv{1,2,3}`,
`stage{s}_block{b}/bn{1,2,3}`, `stage{s}_block{b}/proj_conv`,
`stage{s}_block{b}/proj_bn` (first block of a stage that changes shape) and
`head`; stages count from 1, blocks from 0.

References:
  He et al., Deep Residual Learning for Image Recognition, CVPR 2016.
"""

import functools
from typing import Callable, Sequence

import flax.linen as nn
import jax.numpy as jnp

from rigl_jax.experiment.models import common


def _last_norm(norm: common.ModuleDef, zero_init: bool, name: str) -> nn.Module:
  """The block's last BatchNorm, with gamma zero-initialised if asked."""
  if zero_init:
    return norm(scale_init=nn.initializers.zeros_init(), name=name)
  return norm(name=name)


class ResNetBlock(nn.Module):
  """Basic residual block: two 3x3 convolutions (ResNet-18/34)."""

  filters: int
  conv: common.ModuleDef
  norm: common.ModuleDef
  act: Callable[[jnp.ndarray], jnp.ndarray]
  strides: tuple[int, int] = (1, 1)
  zero_init_residual: bool = False

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    residual = x
    y = self.conv(self.filters, (3, 3), self.strides, padding=common.PAD_3X3,
                  name='conv1')(x)
    y = self.act(self.norm(name='bn1')(y))
    y = self.conv(self.filters, (3, 3), padding=common.PAD_3X3, name='conv2')(y)
    y = _last_norm(self.norm, self.zero_init_residual, 'bn2')(y)
    if residual.shape != y.shape:
      residual = self.conv(
          self.filters, (1, 1), self.strides, name='proj_conv')(residual)
      residual = self.norm(name='proj_bn')(residual)
    return self.act(residual + y)


class BottleneckResNetBlock(nn.Module):
  """Bottleneck residual block: 1x1, 3x3, 1x1 (x4) (ResNet-50/101)."""

  filters: int
  conv: common.ModuleDef
  norm: common.ModuleDef
  act: Callable[[jnp.ndarray], jnp.ndarray]
  strides: tuple[int, int] = (1, 1)
  zero_init_residual: bool = False

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    residual = x
    y = self.conv(self.filters, (1, 1), name='conv1')(x)
    y = self.act(self.norm(name='bn1')(y))
    y = self.conv(self.filters, (3, 3), self.strides, padding=common.PAD_3X3,
                  name='conv2')(y)
    y = self.act(self.norm(name='bn2')(y))
    y = self.conv(self.filters * 4, (1, 1), name='conv3')(y)
    y = _last_norm(self.norm, self.zero_init_residual, 'bn3')(y)
    if residual.shape != y.shape:
      residual = self.conv(
          self.filters * 4, (1, 1), self.strides, name='proj_conv')(residual)
      residual = self.norm(name='proj_bn')(residual)
    return self.act(residual + y)


class ResNet(nn.Module):
  """ResNet v1 for 224x224 ImageNet-style inputs.

  Attributes:
    stage_sizes: number of blocks in each of the stages.
    block_cls: `ResNetBlock` or `BottleneckResNetBlock`.
    num_classes: number of output logits.
    num_filters: filters of the first stage (doubled at each stage).
    zero_init_residual: zero-initialise the last BatchNorm gamma of every
      residual block, so each block starts as the identity (Goyal et al.).
    dtype: computation dtype (parameters stay float32).
    act: activation function.
  """

  stage_sizes: Sequence[int]
  block_cls: common.ModuleDef
  num_classes: int
  num_filters: int = 64
  zero_init_residual: bool = False
  dtype: common.Dtype = jnp.float32
  act: Callable[[jnp.ndarray], jnp.ndarray] = nn.relu

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool = True) -> jnp.ndarray:
    """Maps (B, H, W, C) images to (B, num_classes) float32 logits."""
    conv = functools.partial(
        nn.Conv,
        use_bias=False,
        dtype=self.dtype,
        kernel_init=common.conv_kernel_init,
    )
    norm = common.batch_norm(train, self.dtype)

    # Explicit zero padding then a 'VALID' conv, as the reference Keras
    # ResNet-50 does; the paper's FLOPs counter sees the 230x230 input this
    # gives (see rigl_jax/analysis/flops.py). Numerically the same as padding=3.
    x = jnp.pad(x, ((0, 0), (3, 3), (3, 3), (0, 0)))
    x = conv(self.num_filters, (7, 7), (2, 2), padding='VALID',
             name='conv_init')(x)
    x = self.act(norm(name='bn_init')(x))
    x = nn.max_pool(x, (3, 3), strides=(2, 2), padding='SAME')
    for i, block_size in enumerate(self.stage_sizes):
      for j in range(block_size):
        strides = (2, 2) if i > 0 and j == 0 else (1, 1)
        x = self.block_cls(
            self.num_filters * 2**i,
            conv=conv,
            norm=norm,
            act=self.act,
            strides=strides,
            zero_init_residual=self.zero_init_residual,
            name=f'stage{i + 1}_block{j}',
        )(x)
    x = common.global_avg_pool(x)
    x = nn.Dense(self.num_classes, dtype=self.dtype,
                 kernel_init=common.head_kernel_init, name='head')(x)
    return jnp.asarray(x, jnp.float32)


ResNet18 = functools.partial(
    ResNet, stage_sizes=[2, 2, 2, 2], block_cls=ResNetBlock)
ResNet34 = functools.partial(
    ResNet, stage_sizes=[3, 4, 6, 3], block_cls=ResNetBlock)
ResNet50 = functools.partial(
    ResNet, stage_sizes=[3, 4, 6, 3], block_cls=BottleneckResNetBlock)
ResNet101 = functools.partial(
    ResNet, stage_sizes=[3, 4, 23, 3], block_cls=BottleneckResNetBlock)
