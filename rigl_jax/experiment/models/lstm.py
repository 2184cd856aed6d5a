"""Character-level LSTM language model (the RigL paper's RNN experiment).

Embedding, stacked LSTM layers, and a dense projection back to the
vocabulary. Each LSTM layer keeps its gates fused, as TF's `LSTMCell` in the
reference does, so a layer has one input kernel (in, 4H) and one recurrent
kernel (H, 4H), each an ordinary 2-D param that can be sparsified as a whole.

Parameter paths: `embed/embedding`, `lstm{i}/input/kernel`,
`lstm{i}/recurrent/{kernel,bias}` (i from 0), `head`.

References:
  - Evci et al., Rigging the Lottery: Making All Tickets Winners, ICML 2020
    (Section 4.3: embedding 128, two LSTM layers of 512 units).
  - Hochreiter & Schmidhuber, Long Short-Term Memory, 1997.
"""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from rigl_jax.experiment.models import common

Carry = tuple[jnp.ndarray, jnp.ndarray]


class LSTMCell(nn.RNNCellBase):
  """LSTM cell with fused gates (order i, f, g, o).

  Attributes:
    features: hidden size H.
    forget_bias: added to the forget gate's pre-activation, as in TF.
    dtype: computation dtype (parameters stay float32).
  """

  features: int
  forget_bias: float = 1.0
  dtype: common.Dtype = jnp.float32

  @nn.compact
  def __call__(self, carry: Carry, inputs: jnp.ndarray) -> tuple[Carry, Any]:
    c, h = carry
    z = nn.Dense(4 * self.features, use_bias=False, dtype=self.dtype,
                 name='input')(inputs)
    z += nn.Dense(4 * self.features, dtype=self.dtype,
                  kernel_init=nn.initializers.orthogonal(),
                  name='recurrent')(h)
    i, f, g, o = jnp.split(z, 4, axis=-1)
    new_c = nn.sigmoid(f + self.forget_bias) * c + nn.sigmoid(i) * jnp.tanh(g)
    new_h = nn.sigmoid(o) * jnp.tanh(new_c)
    return (new_c, new_h), new_h

  @nn.nowrap
  def initialize_carry(self, rng: jax.Array,
                       input_shape: tuple[int, ...]) -> Carry:
    """Zero (c, h) for inputs of shape ``(*batch, features_in)``."""
    del rng  # The carry starts at zero.
    shape = tuple(input_shape[:-1]) + (self.features,)
    return jnp.zeros(shape, self.dtype), jnp.zeros(shape, self.dtype)

  @property
  def num_feature_axes(self) -> int:
    return 1


class CharLSTM(nn.Module):
  """Embedding -> stacked LSTMs -> per-step logits over the vocabulary.

  Attributes:
    num_classes: vocabulary size V.
    embed_dim: embedding width.
    hidden_size: LSTM hidden size H of every layer.
    num_layers: number of stacked LSTM layers.
    dropout_rate: dropout after the embedding and each LSTM layer (needs a
      'dropout' rng when positive and `train=True`).
    dtype: computation dtype (parameters stay float32).
  """

  num_classes: int
  embed_dim: int = 128
  hidden_size: int = 512
  num_layers: int = 2
  dropout_rate: float = 0.0
  dtype: common.Dtype = jnp.float32

  @nn.compact
  def __call__(self, tokens: jnp.ndarray, train: bool = True) -> jnp.ndarray:
    """Maps int (B, T) tokens to (B, T, num_classes) float32 logits."""
    dropout = nn.Dropout(self.dropout_rate, deterministic=not train)
    x = nn.Embed(self.num_classes, self.embed_dim, dtype=self.dtype,
                 name='embed')(tokens)
    x = dropout(x)
    for i in range(self.num_layers):
      cell = LSTMCell(self.hidden_size, dtype=self.dtype, name=f'lstm{i}')
      x = nn.RNN(cell)(x)
      x = dropout(x)
    x = nn.Dense(self.num_classes, dtype=self.dtype, name='head')(x)
    return jnp.asarray(x, jnp.float32)
