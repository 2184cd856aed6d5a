"""Pre-activation Wide ResNet for CIFAR (Zagoruyko & Komodakis, 2016).

WRN-d-k has three stages of (d - 4) / 6 blocks with 16k, 32k and 64k filters.
Each block is BN-ReLU-conv3x3-BN-ReLU-(dropout)-conv3x3; a block that changes
shape takes a 1x1 projection of the pre-activated input as its shortcut.

Parameter paths: `conv_init`, `stage{s}_block{b}/{bn1,conv1,bn2,conv2}`,
`stage{s}_block{b}/proj_conv` (shape-changing blocks), `bn_final` and `head`;
stages count from 1, blocks from 0.

References:
  Zagoruyko & Komodakis, Wide Residual Networks, BMVC 2016.
"""

import functools

import flax.linen as nn
import jax.numpy as jnp

from rigl_jax.experiment.models import common


class WideResNetBlock(nn.Module):
  """Pre-activation basic block with optional dropout between the convs."""

  filters: int
  conv: common.ModuleDef
  norm: common.ModuleDef
  strides: tuple[int, int] = (1, 1)
  dropout_rate: float = 0.0

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool = True) -> jnp.ndarray:
    y = nn.relu(self.norm(name='bn1')(x))
    if x.shape[-1] == self.filters and self.strides == (1, 1):
      shortcut = x
    else:
      shortcut = self.conv(
          self.filters, (1, 1), self.strides, padding='VALID',
          name='proj_conv')(y)
    y = self.conv(self.filters, (3, 3), self.strides, name='conv1')(y)
    y = nn.relu(self.norm(name='bn2')(y))
    y = nn.Dropout(self.dropout_rate, deterministic=not train)(y)
    y = self.conv(self.filters, (3, 3), name='conv2')(y)
    return shortcut + y


class WideResNet(nn.Module):
  """WRN-depth-width for 32x32 inputs.

  Attributes:
    depth: total depth d; (d - 4) must be divisible by 6.
    width: widening factor k.
    num_classes: number of output logits.
    dropout_rate: dropout between the convolutions of each block (needs a
      'dropout' rng when positive and `train=True`).
    dtype: computation dtype (parameters stay float32).
  """

  depth: int
  width: int
  num_classes: int
  dropout_rate: float = 0.0
  dtype: common.Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool = True) -> jnp.ndarray:
    """Maps (B, H, W, C) images to (B, num_classes) float32 logits."""
    if (self.depth - 4) % 6:
      raise ValueError(f'WRN depth must be 6n + 4, got {self.depth}.')
    blocks_per_stage = (self.depth - 4) // 6
    conv = functools.partial(
        nn.Conv,
        use_bias=False,
        padding=common.PAD_3X3,
        dtype=self.dtype,
        kernel_init=common.conv_kernel_init,
    )
    norm = common.batch_norm(train, self.dtype)

    x = conv(16, (3, 3), name='conv_init')(x)
    for i in range(3):
      for j in range(blocks_per_stage):
        strides = (2, 2) if i > 0 and j == 0 else (1, 1)
        x = WideResNetBlock(
            16 * self.width * 2**i,
            conv=conv,
            norm=norm,
            strides=strides,
            dropout_rate=self.dropout_rate,
            name=f'stage{i + 1}_block{j}',
        )(x, train=train)
    x = nn.relu(norm(name='bn_final')(x))
    x = common.global_avg_pool(x)
    x = nn.Dense(self.num_classes, dtype=self.dtype, name='head')(x)
    return jnp.asarray(x, jnp.float32)


WRN_16_4 = functools.partial(WideResNet, depth=16, width=4)
WRN_22_2 = functools.partial(WideResNet, depth=22, width=2)
WRN_22_8 = functools.partial(WideResNet, depth=22, width=8)
WRN_28_10 = functools.partial(WideResNet, depth=28, width=10)
