"""The model zoo: Flax linen models looked up by name.

Every model is called as `model.apply(variables, x, train=...)`. Image models
map float (B, H, W, C) inputs to (B, num_classes) float32 logits; models with
BatchNorm keep running statistics in the `batch_stats` collection (pass
`mutable=['batch_stats']` when `train=True`). `char_lstm` and
`transformer_lm` map int (B, T) tokens to (B, T, num_classes) logits,
`num_classes` being the vocabulary size. `transformer_lm` and `vit` stack
their blocks with `nn.scan` when `scan_layers=True` (`stacked_leaves` gives
the matching `sparsify(..., stacked=...)` rule, which the experiment system
passes on by itself).

Every module is named explicitly, so parameter paths read like
`stage1_block0/conv1/kernel`. The first layer is `conv_init` (`dense0` for the
MLPs, `embed` for the language models, `patch_embed` for `vit`) and the
classifier is `head`, so path-based
rules can treat them specially. Convolution kernels are (H, W, Cin, Cout),
depthwise ones (3, 3, 1, C); dense and LSTM kernels are (in, out).

Example:
  >>> import jax, jax.numpy as jnp
  >>> model = get_model('lenet5', num_classes=10)
  >>> variables = model.init(jax.random.PRNGKey(0), jnp.zeros((1, 28, 28, 1)))
  >>> model.apply(variables, jnp.zeros((2, 28, 28, 1))).shape
  (2, 10)
"""

from typing import Any, Callable

import flax.linen as nn
import jax.numpy as jnp

from rigl_jax.experiment.models.cifar_resnet import CifarResNet
from rigl_jax.experiment.models.cifar_resnet import ResNet20
from rigl_jax.experiment.models.lenet import LeNet300100
from rigl_jax.experiment.models.lenet import LeNet5
from rigl_jax.experiment.models.lstm import CharLSTM
from rigl_jax.experiment.models.lstm import LSTMCell
from rigl_jax.experiment.models.mlp import MLP
from rigl_jax.experiment.models.mobilenet import MobileNetV1
from rigl_jax.experiment.models.mobilenet import MobileNetV2
from rigl_jax.experiment.models.resnet import ResNet
from rigl_jax.experiment.models.resnet import ResNet101
from rigl_jax.experiment.models.resnet import ResNet18
from rigl_jax.experiment.models.resnet import ResNet34
from rigl_jax.experiment.models.resnet import ResNet50
from rigl_jax.experiment.models.small_cnn import SmallCNN
from rigl_jax.experiment.models import transformer
from rigl_jax.experiment.models.transformer import TransformerLM
from rigl_jax.experiment.models.transformer import ViT
from rigl_jax.experiment.models.wide_resnet import WideResNet
from rigl_jax.experiment.models.wide_resnet import WRN_16_4
from rigl_jax.experiment.models.wide_resnet import WRN_22_2
from rigl_jax.experiment.models.wide_resnet import WRN_22_8
from rigl_jax.experiment.models.wide_resnet import WRN_28_10

MODELS: dict[str, Callable[..., nn.Module]] = {
    'resnet18': ResNet18,
    'resnet34': ResNet34,
    'resnet50': ResNet50,
    'resnet101': ResNet101,
    'resnet20': ResNet20,
    'wrn_22_8': WRN_22_8,
    'wrn_22_2': WRN_22_2,
    'wrn_16_4': WRN_16_4,
    'wrn_28_10': WRN_28_10,
    'mobilenet_v1': MobileNetV1,
    'mobilenet_v2': MobileNetV2,
    'lenet_300_100': LeNet300100,
    'lenet5': LeNet5,
    'mlp': MLP,
    'small_cnn': SmallCNN,
    'char_lstm': CharLSTM,
    'transformer_lm': TransformerLM,
    'vit': ViT,
}


def stacked_leaves(name: str, kwargs: dict[str, Any]) -> dict[str, int] | None:
  """The `sparsify(..., stacked=...)` rule of a model built with ``kwargs``:
  its scanned blocks (``scan_layers=True``), or None."""
  if name in ('transformer_lm', 'vit') and kwargs.get('scan_layers'):
    return dict(transformer.STACKED)
  return None


def config_stacked(config: Any) -> dict[str, int] | None:
  """The stacked rule of an experiment config: ``config.sparsity.stacked``
  if set, else the model's own (`stacked_leaves`)."""
  stacked = config.sparsity.get('stacked')
  if stacked is None:
    stacked = stacked_leaves(config.model.name,
                             dict(config.model.get('kwargs') or {}))
  return None if stacked is None else dict(stacked)


def model_dims(name: str) -> tuple[tuple[str, int], ...]:
  """The leaf dimensions a model splits along the mesh's ``model`` axis
  (`rigl_jax.experiment.sharding.param_spec`'s ``model_dims``); empty: the
  default (every kernel's last dimension)."""
  if name in ('transformer_lm', 'vit'):
    return transformer.MODEL_DIMS
  return ()


def get_model(name: str, *, num_classes: int, dtype: Any = jnp.float32,
              **kwargs: Any) -> nn.Module:
  """Builds the model registered under `name`.

  Args:
    name: a key of `MODELS`.
    num_classes: number of output logits (the vocabulary size for
      `char_lstm`).
    dtype: computation dtype; parameters stay float32.
    **kwargs: other fields of the model (e.g. `width_multiplier`,
      `hidden_sizes`, `zero_init_residual`); unknown ones raise `TypeError`.

  Returns:
    An unbound `flax.linen.Module`.

  Raises:
    ValueError: if `name` is not a key of `MODELS`.
  """
  if name not in MODELS:
    raise ValueError(
        f'Unknown model {name!r}; valid names: {", ".join(sorted(MODELS))}.')
  for field, value in kwargs.items():
    problem = _size_problem(field, value)
    if problem:
      raise ValueError(f'config.model.kwargs.{field} = {value!r}: {problem}')
  return MODELS[name](num_classes=num_classes, dtype=dtype, **kwargs)


def _size_problem(field: str, value: Any) -> str | None:
  """What is wrong with a size-like model field, or None.

  The integer fields of the zoo's models are sizes and counts: a list of
  them (layer widths, channels, blocks per stage) holds integers >= 1; a
  single one is >= 0 (``small_cnn``'s ``hidden_size=0``: no hidden layer).
  Multipliers are positive and dropout rates in [0, 1).
  """
  listed = isinstance(value, (list, tuple))
  values = value if listed else [value]
  ints = [v for v in values if isinstance(v, int) and not isinstance(v, bool)]
  if ints and any(v < (1 if listed else 0) for v in ints):
    return ('sizes and counts must be integers >= 1' if listed else
            'must be an integer >= 0')
  if field.endswith('multiplier') and not (
      isinstance(value, (int, float)) and value > 0):
    return 'must be a number > 0'
  if field.endswith('dropout_rate') and not (
      isinstance(value, (int, float)) and 0 <= value < 1):
    return 'must be in [0, 1)'
  return None


__all__ = (
    'CharLSTM',
    'CifarResNet',
    'LSTMCell',
    'LeNet300100',
    'LeNet5',
    'MLP',
    'MODELS',
    'MobileNetV1',
    'MobileNetV2',
    'ResNet',
    'ResNet101',
    'ResNet18',
    'ResNet20',
    'ResNet34',
    'ResNet50',
    'SmallCNN',
    'TransformerLM',
    'ViT',
    'WRN_16_4',
    'WRN_22_2',
    'WRN_22_8',
    'WRN_28_10',
    'WideResNet',
    'config_stacked',
    'get_model',
    'model_dims',
    'stacked_leaves',
)
