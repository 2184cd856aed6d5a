"""FLOPs of a Flax model and of a config's experiment, as the RigL paper counts.

`layer_ops` traces a linen model (shapes only) into the `flops.LayerOp` list
that the counting rules in `rigl_jax.analysis.flops` take; `report` does it
for an experiment config. Command line:

  python -m rigl_jax.analysis --config configs/imagenet_resnet50.py
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
import math
from typing import Any, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from rigl_jax import methods as methods_lib
from rigl_jax import paths as paths_lib
from rigl_jax.analysis import flops
from rigl_jax.analysis.flops import LayerOp
from rigl_jax.experiment import models as models_lib
from rigl_jax.experiment.data import base as data_base
from rigl_jax.experiment import steps as steps_lib


def layer_ops(model: nn.Module, input_shape: Sequence[int], *,
              input_dtype: Any = jnp.float32,
              apply_kwargs: Optional[Mapping[str, Any]] = None
              ) -> list[LayerOp]:
  """Traces ``model`` on one example and lists its conv and dense layers.

  Nothing is computed: shapes come from `jax.eval_shape`. Layers inside an
  ``nn.RNN`` count once per time step.

  Args:
    model: a flax linen model whose layers are ``nn.Conv`` / ``nn.Dense``.
    input_shape: the shape of ONE example (no batch dim).
    input_dtype: its dtype (int32 for token inputs).
    apply_kwargs: extra keyword arguments for ``model.apply`` / ``init``.

  Returns:
    The layers in call order, each kernel once.
  """
  apply_kwargs = dict(apply_kwargs or {})
  x = jax.ShapeDtypeStruct((1, *input_shape), input_dtype)
  ops: dict[str, LayerOp] = {}
  repeat_stack = [1]

  def interceptor(next_fun, args, kwargs, context):
    module = context.module
    if context.method_name != '__call__':
      return next_fun(*args, **kwargs)
    if isinstance(module, nn.RNN):
      inputs = args[0]
      time_axis = 0 if module.time_major else 1
      repeat_stack.append(repeat_stack[-1] * inputs.shape[time_axis])
      try:
        return next_fun(*args, **kwargs)
      finally:
        repeat_stack.pop()
    out = next_fun(*args, **kwargs)
    if isinstance(module, (nn.Conv, nn.Dense)):
      inputs = args[0]
      path = '/'.join(module.path) + '/kernel'
      if isinstance(module, nn.Dense):
        kernel = (inputs.shape[-1], module.features)
        # Leading non-batch dims (positions) repeat the layer.
        repeats = math.prod(inputs.shape[1:-1]) * repeat_stack[-1]
        op = LayerOp(path, 'dense', kernel, (), (), (), repeats)
      else:
        groups = module.feature_group_count
        ks = tuple(module.kernel_size)
        nd = len(ks)
        strides = module.strides or 1
        strides = ((strides,) * nd if isinstance(strides, int)
                   else tuple(strides))
        kernel = (*ks, inputs.shape[-1] // groups, module.features)
        kind = ('depthwise' if groups > 1 and groups == inputs.shape[-1]
                else 'conv')
        op = LayerOp(path, kind, kernel, tuple(inputs.shape[1:1 + nd]),
                     tuple(out.shape[1:1 + nd]), strides, repeat_stack[-1])
      ops.setdefault(path, op)
    return out

  def run(x):
    with nn.intercept_methods(interceptor):
      variables = model.init(jax.random.PRNGKey(0), x, **apply_kwargs)
    return variables

  variables = jax.eval_shape(run, x)
  param_paths = set(paths_lib.leaf_paths(variables.get('params', {})))
  fixed = []
  for op in ops.values():
    if op.path not in param_paths:
      # Module paths may carry wrapper names the params tree lacks (or the
      # other way round); match on the longest path suffix.
      matches = [p for p in param_paths
                 if p.endswith(op.path) or op.path.endswith(p)]
      if len(matches) != 1:
        raise ValueError(f'cannot find the kernel of layer {op.path!r} in '
                         f'the params tree')
      op = op._replace(path=matches[0])
    fixed.append(op)
  return fixed



def model_and_input(config: Any):
  """(model, example shape, dtype, apply kwargs, train examples)."""
  name = config.data.name
  if name not in data_base.SPECS:
    raise ValueError(f'unknown dataset {name!r}; valid names: '
                     f'{sorted(data_base.SPECS)}')
  spec = data_base.SPECS[name]
  classes = spec.num_classes
  if spec.kind == 'text':
    seq_len = int(config.data.seq_len)
    shape, dtype = (seq_len,), jnp.int32
    num_train = spec.num_train // seq_len
  else:
    size = int(config.data.image_size)  # set by default_data_config
    shape, dtype = (size, size, spec.channels), jnp.float32
    num_train = spec.num_train
  try:
    model = models_lib.get_model(config.model.name, num_classes=classes,
                                 **config.model.get('kwargs', {}))
  except TypeError as e:
    raise ValueError(f'bad config.model.kwargs for {config.model.name!r}: '
                     f'{e}') from None
  return model, shape, dtype, {'train': False}, num_train


def report(config: Any, padding: str = 'same') -> dict[str, Any]:
  """FLOPs of ``config``'s experiment, relative to dense, as the paper counts.

  Args:
    config: an experiment config (``configs/*.py``).
    padding: see `flops.inference_flops`.

  Returns:
    A dict: ``dense_inference_flops`` (per example), ``inference_ratio`` of
    the configured sparsity/distribution, ``layer_sparsity``, and
    ``training_ratio`` per method: training FLOPs over those of dense 1x
    training, with ``config.training_multiplier``.
  """
  model, shape, dtype, kwargs, num_train = model_and_input(config)
  ops = layer_ops(model, shape, input_dtype=dtype, apply_kwargs=kwargs)
  x = jax.ShapeDtypeStruct((1, *shape), dtype)
  params = jax.eval_shape(
      lambda x: model.init(jax.random.PRNGKey(0), x, **kwargs), x)['params']
  sp_cfg = config.sparsity
  is_sparse = sp_cfg.get('is_sparse')
  if isinstance(is_sparse, (list, tuple)):
    is_sparse = list(is_sparse)
  custom = sp_cfg.get('custom_sparsity')
  sparsities = flops.sparsities_from_distribution(
      params, float(sp_cfg.sparsity), sp_cfg.get('distribution', 'erk'),
      is_sparse=is_sparse, custom_sparsity=dict(custom) if custom else None,
      erk_power_scale=float(sp_cfg.get('erk_power_scale', 1.0)),
      sparsity_budget=sp_cfg.get('sparsity_budget', 'exact'))
  steps_1x = steps_lib.steps_1x(config, num_train)
  multiplier = float(config.get('training_multiplier', 1.0))
  total = steps_lib.num_train_steps(config, num_train)
  f_d = flops.inference_flops(ops, None, padding)
  f_s = flops.inference_flops(ops, sparsities, padding)
  dense_1x = 3 * f_d * steps_1x
  begin = int(sp_cfg.get('begin_step', 0))
  end = steps_lib.end_step(sp_cfg, total)
  ratios = {}
  for method in methods_lib.names():
    # As in the paper, RigL's dense gradients are charged every update_freq
    # steps over the whole run; pruning follows its schedule.
    cost = methods_lib.get_method(method).training_cost
    ratios[method] = flops.training_flops(
        method, ops, sparsities, total_steps=total,
        update_freq=int(sp_cfg.get('update_freq', 100)), begin_step=begin,
        end_step=None if cost == 'dense_gradient_on_update' else end,
        pruning_initial_sparsity=float(
            sp_cfg.get('pruning_initial_sparsity', 0.0)),
        padding=padding) / dense_1x
  return {'model': config.model.name, 'dataset': config.data.name,
          'sparsity': float(sp_cfg.sparsity),
          'distribution': sp_cfg.get('distribution', 'erk'),
          'training_multiplier': multiplier,
          'dense_inference_flops': f_d, 'inference_ratio': f_s / f_d,
          'training_ratio': ratios, 'layer_sparsity': sparsities,
          'steps_1x': steps_1x}


def _main(argv: Sequence[str]) -> None:
  del argv
  from absl import flags  # pylint: disable=g-import-not-at-top
  config = flags.FLAGS.config
  try:
    r = report(config, flags.FLAGS.padding)
  except ValueError as e:
    raise SystemExit(f'error: {e}') from None
  print(f"{r['model']} on {r['dataset']}: sparsity {r['sparsity']} "
        f"({r['distribution']}), training x{r['training_multiplier']:g}")
  print(f"dense inference: {r['dense_inference_flops']:.4g} FLOPs/example")
  print(f"sparse inference: {r['inference_ratio']:.4f}x dense")
  print('training FLOPs vs dense 1x training:')
  for method, ratio in r['training_ratio'].items():
    print(f'  {method:<8} {ratio:.4f}x')


def main() -> None:
  """``python -m rigl_jax.analysis --config FILE[:overrides]``."""
  from absl import app  # pylint: disable=g-import-not-at-top
  from absl import flags  # pylint: disable=g-import-not-at-top
  from ml_collections import config_flags  # pylint: disable=g-import-not-at-top
  config_flags.DEFINE_config_file('config', None, 'experiment config file',
                                  lock_config=True)
  flags.DEFINE_enum('padding', 'same', list(flops.PADDINGS),
                    "conv output sizes: the paper's 'same' rule or the "
                    "model's own")
  flags.mark_flags_as_required(['config'])
  from rigl_jax.experiment import cli  # pylint: disable=g-import-not-at-top
  app.run(_main, flags_parser=cli.parse_flags)
