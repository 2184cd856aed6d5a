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


def _as_tuple(v: Any) -> tuple[int, ...]:
  return tuple(v) if isinstance(v, (tuple, list)) else (v,)


def layer_ops(model: nn.Module, input_shape: Sequence[int], *,
              input_dtype: Any = jnp.float32,
              apply_kwargs: Optional[Mapping[str, Any]] = None
              ) -> list[LayerOp]:
  """Traces ``model`` on one example and lists its layers that count.

  Nothing is computed: shapes come from `jax.eval_shape`. Counted:
  ``nn.Conv``, ``nn.Dense`` and ``nn.DenseGeneral`` (a transformer's
  Q/K/V/O projections), an ``nn.Embed`` used as the output layer
  (``attend``, tied embeddings) and the scores of every
  ``nn.MultiHeadDotProductAttention`` (kind ``'attention'``). Layers inside
  an ``nn.RNN`` count once per time step; a layer whose parameters are
  stacked (``nn.scan`` / ``nn.vmap``: the kernel has more leading
  dimensions than the layer uses) counts once per stacked layer.

  Args:
    model: a flax linen model.
    input_shape: the shape of ONE example (no batch dim).
    input_dtype: its dtype (int32 for token inputs).
    apply_kwargs: extra keyword arguments for ``model.apply`` / ``init``.

  Returns:
    The layers in call order, each kernel (each attention) once.
  """
  apply_kwargs = dict(apply_kwargs or {})
  x = jax.ShapeDtypeStruct((1, *input_shape), input_dtype)
  ops: dict[str, LayerOp] = {}
  # path -> (the kernel path whose leading dims give the stack, the
  # kernel's rank as the layer uses it)
  ranks: dict[str, tuple[str, int]] = {}
  repeat_stack = [1]

  def add(path, op, kernel_path, rank):
    ops.setdefault(path, op)
    ranks.setdefault(path, (kernel_path, rank))

  def interceptor(next_fun, args, kwargs, context):
    module = context.module
    name = '/'.join(module.path)
    if isinstance(module, nn.Embed) and context.method_name == 'attend':
      query = args[0]
      path = name + '/embedding'
      op = LayerOp(path, 'dense', (query.shape[-1], module.num_embeddings),
                   (), (), (), math.prod(query.shape[1:-1]) *
                   repeat_stack[-1])
      add(path, op, path, 2)
      return next_fun(*args, **kwargs)
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
    if isinstance(module, nn.MultiHeadDotProductAttention):
      q = args[0]
      k = args[1] if len(args) > 1 and args[1] is not None else kwargs.get(
          'inputs_k', kwargs.get('inputs_kv', q))
      k = q if k is None else k
      features = module.qkv_features or q.shape[-1]
      op = LayerOp(name + '/scores', 'attention',
                   (module.num_heads, features // module.num_heads),
                   (q.shape[-2],), (k.shape[-2],), (),
                   math.prod(q.shape[1:-2]) * repeat_stack[-1])
      add(op.path, op, name + '/query/kernel', 3)
      return next_fun(*args, **kwargs)
    out = next_fun(*args, **kwargs)
    path = name + '/kernel'
    if isinstance(module, nn.DenseGeneral):
      inputs = args[0]
      axes = [a % inputs.ndim for a in _as_tuple(module.axis)]
      fan_in = math.prod(inputs.shape[a] for a in axes)
      features = _as_tuple(module.features)
      repeats = math.prod(inputs.shape[1:]) // fan_in * repeat_stack[-1]
      op = LayerOp(path, 'dense', (fan_in, math.prod(features)), (), (), (),
                   repeats)
      add(path, op, path, len(axes) + len(features))
    elif isinstance(module, nn.Dense):
      inputs = args[0]
      kernel = (inputs.shape[-1], module.features)
      # Leading non-batch dims (positions) repeat the layer.
      repeats = math.prod(inputs.shape[1:-1]) * repeat_stack[-1]
      add(path, LayerOp(path, 'dense', kernel, (), (), (), repeats), path, 2)
    elif isinstance(module, nn.Conv):
      inputs = args[0]
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
      add(path, op, path, nd + 2)
    return out

  def run(x):
    with nn.intercept_methods(interceptor):
      variables = model.init(jax.random.PRNGKey(0), x, **apply_kwargs)
    return variables

  variables = jax.eval_shape(run, x)
  params = variables.get('params', {})
  shapes = dict(zip(paths_lib.leaf_paths(params),
                    [tuple(p.shape) for p in jax.tree.leaves(params)]))

  def param_path(path: str) -> str:
    if path in shapes:
      return path
    # Module paths may carry wrapper names the params tree lacks (or the
    # other way round); match on the longest path suffix.
    matches = [p for p in shapes if p.endswith(path) or path.endswith(p)]
    if len(matches) != 1:
      raise ValueError(f'cannot find the kernel of layer {path!r} in the '
                       f'params tree')
    return matches[0]

  fixed = []
  for path, op in ops.items():
    kernel_path, rank = ranks[path]
    kernel_path = param_path(kernel_path)
    if op.kind != 'attention':
      op = op._replace(path=kernel_path)
    shape = shapes[kernel_path]
    stack = math.prod(shape[:len(shape) - rank])  # 1 unless stacked
    fixed.append(op._replace(repeats=op.repeats * stack))
  return fixed


def model_and_input(config: Any):
  """(model, example shape, dtype, apply kwargs, train examples)."""
  info = data_base.registry_info(config.data)
  if not info.num_train and not config.get('num_train_steps'):
    raise ValueError(
        f'the size of {info.name!r} is known only once it is tokenized; set '
        'config.num_train_steps to count FLOPs without loading it')
  shape, num_train = info.input_shape, info.num_train
  dtype = jnp.int32 if info.kind == 'text' else jnp.float32
  classes = info.num_classes
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
      stacked=models_lib.config_stacked(config),
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
    own = methods_lib.hyperparameters(method)
    obj = methods_lib.get_method(
        method, **{k: sp_cfg[k] for k in own if k in sp_cfg})
    cost = obj.training_cost
    ratios[method] = flops.training_flops(
        obj, ops, sparsities, total_steps=total,
        update_freq=int(sp_cfg.get('update_freq', 100)), begin_step=begin,
        end_step=None if cost == 'dense_gradient_on_update' else end,
        pruning_initial_sparsity=float(
            sp_cfg.get('pruning_initial_sparsity', 0.0)),
        padding=padding, global_sparsity=float(sp_cfg.sparsity)) / dense_1x
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
  from rigl_jax.experiment import console  # pylint: disable=g-import-not-at-top
  console.quiet_libraries()  # no backend notices unless --verbosity
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
