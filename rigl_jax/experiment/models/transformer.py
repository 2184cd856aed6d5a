"""Pre-norm transformers: a decoder language model and a Vision Transformer.

Both stack ``num_layers`` identical blocks (LayerNorm -> multi-head
self-attention -> residual, LayerNorm -> MLP -> residual). With
``scan_layers=True`` the blocks are one ``nn.scan`` over a single block
definition, as MaxText, big_vision and t5x stack them: every block
parameter is one leaf under ``blocks/`` with the layers along axis 0
(`STACKED`, the rule to give ``sparsify(..., stacked=...)``). With
``scan_layers=False`` the blocks are ``block0``, ``block1``, ... and every
parameter is an ordinary leaf. `unstack_blocks` maps the first layout to
the second, so the same weights can run either way.

Parameter paths: ``embed`` (tokens) / ``patch_embed`` (image patches),
``pos_embed``, ``blocks`` or ``block{i}`` with ``attn/{query,key,value,out}``
(Flax `MultiHeadDotProductAttention`: kernels (d, heads, head_dim) and
(heads, head_dim, d)), ``fc1``, ``fc2`` (the MLP), ``ln1``, ``ln2``; then
``encoder/ln_f`` and ``head``.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from rigl_jax.experiment.models import common

# The leaves of a scanned stack, for `sparsify(..., stacked=...)`: every
# parameter under `blocks/` holds the layers along axis 0.
STACKED = {r'(^|/)blocks/': 0}

# The dimension of each leaf split along the mesh's `model` axis
# (`rigl_jax.experiment.sharding.param_spec`'s ``model_dims``; negative, so
# stacked leaves match too): attention heads and MLP hidden units, as
# Megatron-LM splits a block (the attention and the MLP each need one
# all-reduce, after the output projection and after fc2).
MODEL_DIMS = (
    (r'attn/(query|key|value)/kernel$', -2),  # (d, heads, head_dim)
    (r'attn/(query|key|value)/bias$', -2),  # (heads, head_dim)
    (r'attn/out/kernel$', -3),  # (heads, head_dim, d)
    (r'fc1/(kernel|bias)$', -1),  # (d, mlp), (mlp,)
    (r'fc2/kernel$', -2),  # (mlp, d)
)


class Block(nn.Module):
  """One pre-norm transformer block.

  Attributes:
    num_heads: attention heads.
    mlp_dim: hidden width of the MLP.
    causal: mask attention to earlier positions (language models).
    dropout_rate: dropout after attention and the MLP.
    dtype: computation dtype (parameters stay float32).
  """

  num_heads: int
  mlp_dim: int
  causal: bool = False
  dropout_rate: float = 0.0
  dtype: common.Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool) -> jnp.ndarray:
    drop = nn.Dropout(self.dropout_rate, deterministic=not train)
    mask = nn.make_causal_mask(x[..., 0]) if self.causal else None
    h = nn.LayerNorm(dtype=self.dtype, name='ln1')(x)
    h = nn.MultiHeadDotProductAttention(
        num_heads=self.num_heads, dtype=self.dtype, name='attn')(
            h, h, mask=mask, deterministic=True)
    x = x + drop(h)
    h = nn.LayerNorm(dtype=self.dtype, name='ln2')(x)
    h = nn.Dense(self.mlp_dim, dtype=self.dtype, name='fc1')(h)
    h = nn.Dense(x.shape[-1], dtype=self.dtype, name='fc2')(nn.gelu(h))
    return x + drop(h)


class _ScanBlock(Block):
  """`Block` in nn.scan's ``(carry, x) -> (carry, y)`` form (same params)."""

  train: bool = False

  def __call__(self, x, _):  # pylint: disable=arguments-differ
    return super().__call__(x, self.train), None


class Encoder(nn.Module):
  """``num_layers`` blocks, scanned (one stacked leaf per parameter) or not.

  Attributes:
    num_layers, num_heads, mlp_dim, causal, dropout_rate, dtype: as
      `Block`'s.
    scan_layers: stack the blocks with ``nn.scan`` (parameters under
      ``blocks/`` with the layers along axis 0).
  """

  num_layers: int
  num_heads: int
  mlp_dim: int
  causal: bool = False
  dropout_rate: float = 0.0
  scan_layers: bool = False
  dtype: common.Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool) -> jnp.ndarray:
    if self.scan_layers:
      stack = nn.scan(
          _ScanBlock, variable_axes={'params': 0},
          split_rngs={'params': True, 'dropout': True},
          in_axes=nn.broadcast, length=self.num_layers)
      x, _ = stack(self.num_heads, self.mlp_dim, self.causal,
                   self.dropout_rate, self.dtype, train=train,
                   name='blocks')(x, None)
    else:
      for i in range(self.num_layers):
        x = Block(self.num_heads, self.mlp_dim, self.causal,
                  self.dropout_rate, self.dtype, name=f'block{i}')(x, train)
    return nn.LayerNorm(dtype=self.dtype, name='ln_f')(x)


class TransformerLM(nn.Module):
  """A decoder-only causal language model: int (B, T) -> (B, T, V) logits.

  Attributes:
    num_classes: vocabulary size V.
    max_len: the longest sequence (learned position embeddings).
    embed_dim, num_layers, num_heads, mlp_dim: the sizes.
    dropout_rate: dropout on the embeddings and in each block.
    scan_layers: see `Encoder`.
    tie_embeddings: the output layer is the token embedding's transpose
      (no ``head`` leaf).
    dtype: computation dtype (parameters stay float32).
  """

  num_classes: int
  max_len: int = 256
  embed_dim: int = 128
  num_layers: int = 4
  num_heads: int = 4
  mlp_dim: int = 512
  dropout_rate: float = 0.0
  scan_layers: bool = False
  tie_embeddings: bool = False
  dtype: common.Dtype = jnp.float32

  @nn.compact
  def __call__(self, tokens: jnp.ndarray, train: bool = True) -> jnp.ndarray:
    if tokens.shape[-1] > self.max_len:
      raise ValueError(f'sequences of {tokens.shape[-1]} tokens; the model '
                       f'takes at most max_len={self.max_len}')
    embed = nn.Embed(self.num_classes, self.embed_dim, dtype=self.dtype,
                     name='embed')
    pos = self.param('pos_embed', nn.initializers.normal(0.02),
                     (self.max_len, self.embed_dim))
    x = embed(tokens) + pos[:tokens.shape[-1]].astype(self.dtype)
    x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
    x = Encoder(self.num_layers, self.num_heads, self.mlp_dim, causal=True,
                dropout_rate=self.dropout_rate, scan_layers=self.scan_layers,
                dtype=self.dtype, name='encoder')(x, train)
    if self.tie_embeddings:
      logits = embed.attend(x)
    else:
      logits = nn.Dense(self.num_classes, dtype=self.dtype, name='head')(x)
    return jnp.asarray(logits, jnp.float32)


class ViT(nn.Module):
  """A Vision Transformer: float (B, H, W, C) -> (B, num_classes) logits.

  Attributes:
    num_classes: output logits.
    patch_size: square patches (H and W must be multiples of it).
    embed_dim, num_layers, num_heads, mlp_dim: the sizes (defaults: a
      ViT-Ti/16-like model; ViT-B/16 is 768, 12, 12, 3072).
    pool: ``'cls'`` (a class token, as the paper) or ``'gap'`` (the mean of
      the patch tokens, as big_vision's ViT by default).
    dropout_rate: dropout in each block.
    scan_layers: see `Encoder`.
    dtype: computation dtype (parameters stay float32).
  """

  num_classes: int
  patch_size: int = 16
  embed_dim: int = 192
  num_layers: int = 12
  num_heads: int = 3
  mlp_dim: int = 768
  pool: str = 'cls'
  dropout_rate: float = 0.0
  scan_layers: bool = False
  dtype: common.Dtype = jnp.float32

  @nn.compact
  def __call__(self, images: jnp.ndarray, train: bool = True) -> jnp.ndarray:
    if self.pool not in ('cls', 'gap'):
      raise ValueError(f"pool must be 'cls' or 'gap', got {self.pool!r}")
    p = self.patch_size
    x = nn.Conv(self.embed_dim, (p, p), strides=(p, p), padding='VALID',
                dtype=self.dtype, name='patch_embed')(images)
    b, h, w, d = x.shape
    x = x.reshape(b, h * w, d)
    if self.pool == 'cls':
      cls = self.param('cls', nn.initializers.zeros, (1, 1, d))
      x = jnp.concatenate([jnp.tile(cls.astype(x.dtype), (b, 1, 1)), x], 1)
    pos = self.param('pos_embed', nn.initializers.normal(0.02),
                     (1, x.shape[1], d))
    x = x + pos.astype(x.dtype)
    x = Encoder(self.num_layers, self.num_heads, self.mlp_dim,
                dropout_rate=self.dropout_rate, scan_layers=self.scan_layers,
                dtype=self.dtype, name='encoder')(x, train)
    x = x[:, 0] if self.pool == 'cls' else x.mean(axis=1)
    x = nn.Dense(self.num_classes, dtype=self.dtype, name='head')(x)
    return jnp.asarray(x, jnp.float32)


def unstack_blocks(params: Any, num_layers: int) -> Any:
  """The parameters of a ``scan_layers=True`` model for ``scan_layers=False``.

  Args:
    params: the ``params`` collection of a scanned `TransformerLM` or `ViT`.
    num_layers: the number of stacked blocks.

  Returns:
    The same weights with ``encoder/blocks/...`` (layers along axis 0)
    split into ``encoder/block{i}/...``.
  """
  params = dict(params)
  encoder = dict(params['encoder'])
  stacked = encoder.pop('blocks')
  for i in range(num_layers):
    encoder[f'block{i}'] = jax.tree.map(lambda x, i=i: x[i], stacked)
  params['encoder'] = encoder
  return params


def stack_blocks(params: Any, num_layers: int) -> Any:
  """The inverse of `unstack_blocks`: ``encoder/block{i}/...`` stacked
  along axis 0 into ``encoder/blocks/...`` (None leaves, e.g. the dense
  entries of a mask tree, stay None)."""
  params = dict(params)
  encoder = dict(params['encoder'])
  blocks = [encoder.pop(f'block{i}') for i in range(num_layers)]
  encoder['blocks'] = jax.tree.map(lambda *xs: jnp.stack(xs), *blocks)
  params['encoder'] = encoder
  return params


def scanned_twin(model: Any) -> Any:
  """The ``scan_layers=True`` twin of an unrolled `TransformerLM` or `ViT`
  (None for any other model).

  The experiment system initialises an unrolled model from its twin's
  weights and masks, unstacked, so the same seed starts both layouts from
  the same weights and masks (they part only where float reassociation or
  the drop-score noise, keyed in leaf order, swaps a near-tie).
  """
  if isinstance(model, (TransformerLM, ViT)) and not model.scan_layers:
    return model.clone(scan_layers=True)
  return None
