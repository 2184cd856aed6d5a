"""FLOPs of sparse models and of sparse training, counted as the RigL paper.

Inference FLOPs follow the counting code the paper uses (google-research's
MicroNet-challenge ``counting.py``, called from ``rigl/sparse_utils.py``'s
``get_stats``):

* only convolutions (regular and depthwise) and dense layers count;
  batch norm, pooling, residual additions and embeddings are ignored;
* a layer with per-group fan-in ``F`` (``kh * kw * c_in / groups`` for a
  conv, ``c_in`` for a dense layer), density ``d`` and ``N`` output elements
  costs ``F*d*N`` multiplies and ``(F*d - 1)*N`` adds (a multiply-add is two
  FLOPs), plus one add per output for the bias and one multiply per output
  for the ReLU, which the reference counts for every layer;
* conv output sizes use the reference's 'same' convention,
  ``ceil((in - k + 1 + 2*(k // 2)) / stride)`` per spatial dim
  (``padding='model'`` uses the model's real output shapes instead).

Training FLOPs per step (Evci et al. 2020, Section 4.1 and Appendix H), with
``f_D`` / ``f_S`` the dense / sparse forward costs: a step costs forward
plus backward, 3x the forward. Dense ``3 f_D``; Static and SET ``3 f_S``;
SNFS ``2 f_S + f_D`` (it needs the dense gradient every step); RigL
``(3 f_S dT + 2 f_S + f_D) / (dT + 1)`` while it updates masks (one dense
gradient every ``dT = update_freq`` steps) and ``3 f_S`` after
``end_step``; gradual pruning ``3 f(s_t)`` with ``s_t`` its cubic schedule
(dense before ``begin_step``). Totals are relative to dense training of the
1x length, so a training-length multiplier scales them.

Usage:
  python -m rigl_jax.flops --config configs/imagenet_resnet50.py
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
import math
from typing import Any, NamedTuple, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from rigl_jax import distributions
from rigl_jax import masks as masks_lib
from rigl_jax import paths as paths_lib
from rigl_jax import schedules

METHODS = ('dense', 'static', 'set', 'snfs', 'rigl', 'pruning')
PADDINGS = ('same', 'model')


class LayerOp(NamedTuple):
  """One conv or dense application in a model's forward pass.

  Attributes:
    path: the path string of the layer's kernel in the params tree.
    kind: ``'conv'``, ``'depthwise'`` or ``'dense'``.
    kernel_shape: the kernel's shape (flax layout: spatial..., in/groups, out).
    in_spatial: the input's spatial dims (convs; ``()`` for dense).
    out_spatial: the model's real output spatial dims (convs).
    strides: conv strides (``()`` for dense).
    repeats: applications per example (e.g. positions of a sequence).
  """
  path: str
  kind: str
  kernel_shape: tuple[int, ...]
  in_spatial: tuple[int, ...]
  out_spatial: tuple[int, ...]
  strides: tuple[int, ...]
  repeats: int


def _same_out(size: int, k: int, stride: int) -> int:
  return int(math.ceil((size - k + 1 + 2 * (k // 2)) / stride))


def op_flops(op: LayerOp, density: float = 1.0,
             padding: str = 'same') -> float:
  """FLOPs (multiplies + adds) of one layer application, per example.

  Args:
    op: the layer.
    density: the fraction of its kernel's weights that are non-zero.
    padding: ``'same'`` (the paper's convention) or ``'model'``.

  Returns:
    ``N * (2 * F * density + 1)`` with ``N`` output elements and per-group
    fan-in ``F`` (see the module docstring).
  """
  fan_in = math.prod(op.kernel_shape[:-1])
  c_out = op.kernel_shape[-1]
  if op.kind == 'dense':
    n_out = c_out
  else:
    if padding == 'same':
      spatial = [_same_out(s, k, st) for s, k, st in
                 zip(op.in_spatial, op.kernel_shape[:-2], op.strides)]
    else:
      spatial = list(op.out_spatial)
    n_out = math.prod(spatial) * c_out
  n_out *= op.repeats
  vector = fan_in * density
  mults = vector * n_out + n_out  # the products, and the ReLU
  adds = (vector - 1) * n_out + n_out  # the sums, and the bias
  return float(mults + adds)


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


def inference_flops(ops: Sequence[LayerOp],
                    sparsities: Optional[Mapping[str, float]] = None,
                    padding: str = 'same') -> float:
  """Forward FLOPs per example, each layer scaled by its density.

  Args:
    ops: from `layer_ops`.
    sparsities: ``{kernel path: sparsity}``; missing layers are dense.
    padding: ``'same'`` (paper) or ``'model'``.

  Returns:
    The FLOPs of one forward pass of one example.
  """
  if padding not in PADDINGS:
    raise ValueError(f'unknown padding {padding!r}; valid: {list(PADDINGS)}')
  sparsities = sparsities or {}
  return sum(op_flops(op, 1.0 - sparsities.get(op.path, 0.0), padding)
             for op in ops)


def sparsities_from_masks(masks: Any) -> dict[str, float]:
  """``{path: measured sparsity}`` of every mask leaf (``rigl_jax.get_masks``)."""
  out = {}
  flat, _ = jax.tree_util.tree_flatten_with_path(
      masks, is_leaf=masks_lib.is_none)
  for path, mk in flat:
    if mk is not None:
      mk = np.asarray(mk)
      out[paths_lib.path_str(path)] = 1.0 - float(mk.sum()) / mk.size
  return out


def sparsities_from_distribution(params: Any, sparsity: float,
                                 distribution: str = 'erk',
                                 **kwargs: Any) -> dict[str, float]:
  """``{path: sparsity}`` from `rigl_jax.sparsity_distribution`.

  Sparsities are the realised ones, ``floor(s * N) / N`` zeros per layer, as
  the masks will have them.
  """
  tree = distributions.sparsity_distribution(params, sparsity, distribution,
                                             **kwargs)
  flat, _ = jax.tree_util.tree_flatten_with_path(tree)
  shapes = dict(zip(paths_lib.leaf_paths(params),
                    [np.shape(x) for x in jax.tree.leaves(params)]))
  out = {}
  for path, s in flat:
    name = paths_lib.path_str(path)
    shape = shapes[name]
    out[name] = distributions.num_zeros(shape, s) / math.prod(shape)
  return out


def training_flops(method: str, ops: Sequence[LayerOp],
                   sparsities: Mapping[str, float], *, total_steps: int,
                   update_freq: int = 100, begin_step: int = 0,
                   end_step: Optional[int] = None,
                   pruning_initial_sparsity: float = 0.0,
                   padding: str = 'same') -> float:
  """Training FLOPs per example summed over ``total_steps`` steps.

  Args:
    method: one of `METHODS`.
    ops: from `layer_ops`.
    sparsities: the final per-layer sparsities (``{path: sparsity}``).
    total_steps: number of training steps.
    update_freq: steps between mask updates (RigL's ``dT``; the pruning
      interval).
    begin_step: first mask update / pruning step.
    end_step: last mask update / end of pruning (default ``total_steps``).
    pruning_initial_sparsity: ``s_i`` of the pruning schedule.
    padding: see `inference_flops`.

  Returns:
    Sum over steps of each step's FLOPs for one example.
  """
  if method not in METHODS:
    raise ValueError(f'unknown method {method!r}; valid: {list(METHODS)}')
  end_step = total_steps if end_step is None else end_step
  f_d = inference_flops(ops, None, padding)
  f_s = inference_flops(ops, sparsities, padding)
  if method == 'dense':
    return 3 * f_d * total_steps
  if method in ('static', 'set'):
    return 3 * f_s * total_steps
  if method == 'snfs':
    return (2 * f_s + f_d) * total_steps
  if method == 'rigl':
    updating = max(0, min(end_step, total_steps) - begin_step)
    per_update_window = (3 * f_s * update_freq + 2 * f_s + f_d) / (
        update_freq + 1)
    return per_update_window * updating + 3 * f_s * (total_steps - updating)
  # Gradual pruning: every layer follows s_t = s_f + (s_i - s_f)(1 - p)^3,
  # i.e. it is a fraction L(t) = 1 - (1 - p)^3 of the way from s_i to its
  # s_f. FLOPs are linear in each layer's density, hence in L.
  f_init = inference_flops(
      ops, {p: pruning_initial_sparsity for p in sparsities}, padding)
  total = 3 * f_init * min(begin_step, total_steps)
  updates = list(range(begin_step, min(end_step, total_steps - 1) + 1,
                       update_freq))
  for u, nxt in zip(updates, updates[1:] + [total_steps]):
    level = 1.0 if end_step <= begin_step else float(
        schedules.pruning_sparsity(
            u, initial_sparsity=0.0, final_sparsity=1.0,
            begin_step=begin_step, end_step=end_step))
    total += 3 * (f_init + (f_s - f_init) * level) * (nxt - u)
  return total


# Static facts the CLI needs without loading data: (example shape, input
# dtype, classes, train examples). Shakespeare's count is the bundled split's
# 90% of ~5.06M characters in sequences of seq_len (only the step count, not
# any ratio, depends on it).
_IMAGE_DATA = {'mnist': (1, 10, 60_000), 'fashion_mnist': (1, 10, 60_000),
               'cifar10': (3, 10, 50_000), 'cifar100': (3, 100, 50_000),
               'imagenet2012': (3, 1000, 1_281_167)}
_SHAKESPEARE_VOCAB, _SHAKESPEARE_CHARS = 84, 4_550_000


def _model_and_input(config: Any):
  """(model, example shape, dtype, apply kwargs, train examples)."""
  from rigl_jax import models as models_lib  # pylint: disable=g-import-not-at-top
  name = config.data.name
  if name == 'shakespeare':
    seq_len = int(config.data.seq_len)
    shape, dtype, classes = (seq_len,), jnp.int32, _SHAKESPEARE_VOCAB
    num_train = _SHAKESPEARE_CHARS // seq_len
  elif name in _IMAGE_DATA:
    channels, classes, num_train = _IMAGE_DATA[name]
    size = int(config.data.image_size)  # set by default_data_config
    shape, dtype = (size, size, channels), jnp.float32
  else:
    raise ValueError(f'unknown dataset {name!r}; valid names: '
                     f'{sorted([*_IMAGE_DATA, "shakespeare"])}')
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
    padding: see `inference_flops`.

  Returns:
    A dict: ``dense_inference_flops`` (per example), ``inference_ratio`` of
    the configured sparsity/distribution, ``layer_sparsity``, and
    ``training_ratio`` per method: training FLOPs over those of dense 1x
    training, with ``config.training_multiplier``.
  """
  model, shape, dtype, kwargs, num_train = _model_and_input(config)
  ops = layer_ops(model, shape, input_dtype=dtype, apply_kwargs=kwargs)
  x = jax.ShapeDtypeStruct((1, *shape), dtype)
  params = jax.eval_shape(
      lambda x: model.init(jax.random.PRNGKey(0), x, **kwargs), x)['params']
  sp_cfg = config.sparsity
  is_sparse = sp_cfg.get('is_sparse')
  if isinstance(is_sparse, (list, tuple)):
    is_sparse = list(is_sparse)
  custom = sp_cfg.get('custom_sparsity')
  sparsities = sparsities_from_distribution(
      params, float(sp_cfg.sparsity), sp_cfg.get('distribution', 'erk'),
      is_sparse=is_sparse, custom_sparsity=dict(custom) if custom else None,
      erk_power_scale=float(sp_cfg.get('erk_power_scale', 1.0)))
  if config.get('num_train_steps'):
    steps_1x = int(config.num_train_steps)
  else:
    steps_1x = int(math.ceil(config.num_epochs * max(
        1, num_train // config.data.batch_size)))
  multiplier = float(config.get('training_multiplier', 1.0))
  total = max(1, int(round(steps_1x * multiplier)))
  f_d = inference_flops(ops, None, padding)
  f_s = inference_flops(ops, sparsities, padding)
  dense_1x = 3 * f_d * steps_1x
  begin = int(sp_cfg.get('begin_step', 0))
  end = sp_cfg.get('end_step')
  if end is None:
    end = int(sp_cfg.get('end_fraction', 0.75) * total)
  ratios = {}
  for method in METHODS:
    # As in the paper, RigL's dense gradients are charged every update_freq
    # steps over the whole run; pruning follows its schedule.
    ratios[method] = training_flops(
        method, ops, sparsities, total_steps=total,
        update_freq=int(sp_cfg.get('update_freq', 100)), begin_step=begin,
        end_step=None if method == 'rigl' else end,
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


if __name__ == '__main__':
  from absl import app  # pylint: disable=g-import-not-at-top
  from absl import flags  # pylint: disable=g-import-not-at-top
  from ml_collections import config_flags  # pylint: disable=g-import-not-at-top
  config_flags.DEFINE_config_file('config', None, 'experiment config file',
                                  lock_config=True)
  flags.DEFINE_enum('padding', 'same', list(PADDINGS),
                    "conv output sizes: the paper's 'same' rule or the "
                    "model's own")
  flags.mark_flags_as_required(['config'])
  app.run(_main)
