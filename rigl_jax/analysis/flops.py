"""FLOPs of sparse models and of sparse training, counted as the RigL paper.

Inference FLOPs follow the counting code the paper uses (google-research's
MicroNet-challenge ``counting.py``, called from ``rigl/sparse_utils.py``'s
``get_stats``):

* only convolutions (regular and depthwise) and dense layers count;
  batch norm, pooling, residual additions and embeddings are ignored;
  an embedding used as the output layer (tied weights, ``Embed.attend``)
  is a dense layer, and a transformer's Q/K/V/O projections are dense
  layers with fan-in ``prod(contracted dims)``;
* a layer with per-group fan-in ``F`` (``kh * kw * c_in / groups`` for a
  conv, ``c_in`` for a dense layer), density ``d`` and ``N`` output elements
  costs ``F*d*N`` multiplies and ``(F*d - 1)*N`` adds (a multiply-add is two
  FLOPs), plus one add per output for the bias and one multiply per output
  for the ReLU, which the reference counts for every layer;
* conv output sizes use the reference's 'same' convention,
  ``ceil((in - k + 1 + 2*(k // 2)) / stride)`` per spatial dim
  (``padding='model'`` uses the model's real output shapes instead);
* self-attention's scores and their use are dense whatever the kernels'
  sparsity, and counted in full (a causal mask is applied to a full score
  matrix): with ``H`` heads of size ``h``, ``Tq`` queries and ``Tk`` keys,
  ``QK^T`` costs ``H*Tq*Tk*(2h - 1)``, the softmax ``3*H*Tq*Tk`` (an
  exponential, an add to the normaliser and a divide per score) and the
  weighted sum of values ``H*Tq*h*(2*Tk - 1)``. The counting code has no
  attention (its models have none); this follows its rule of counting
  every multiply and add. Layer norms, GELUs and the 1/sqrt(h) scaling are
  elementwise and ignored like batch norm.

Training FLOPs per step (Evci et al. 2020, Section 4.1 and Appendix H), with
``f_D`` / ``f_S`` the dense / sparse forward costs: a step costs forward
plus backward, 3x the forward. Dense ``3 f_D``; Static and SET ``3 f_S``;
SNFS ``2 f_S + f_D`` (it needs the dense gradient every step); RigL
``(3 f_S dT + 2 f_S + f_D) / (dT + 1)`` while it updates masks (one dense
gradient every ``dT = update_freq`` steps) and ``3 f_S`` after
``end_step``; gradual pruning ``3 f(s_t)`` with ``s_t`` its cubic schedule
(dense before ``begin_step``). Totals are relative to dense training of the
1x length, so a training-length multiplier scales them.

This module holds the counting rules and needs jax, numpy and the core
alone; `rigl_jax.analysis.model_flops` lists a Flax model's layers
(`LayerOp`) and reports a config's FLOPs:

  python -m rigl_jax.analysis --config configs/imagenet_resnet50.py
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
import math
from typing import Any, NamedTuple, Optional, Union

import jax
import numpy as np

from rigl_jax import distributions
from rigl_jax import layers as layers_lib
from rigl_jax import masks as masks_lib
from rigl_jax import methods as methods_lib
from rigl_jax import paths as paths_lib
from rigl_jax import schedules
from rigl_jax.methods import granet as granet_lib

PADDINGS = ('same', 'model')


class LayerOp(NamedTuple):
  """One conv or dense application in a model's forward pass.

  Attributes:
    path: the path string of the layer's kernel in the params tree.
    kind: ``'conv'``, ``'depthwise'``, ``'dense'`` or ``'attention'``
      (the scores of one attention layer; ``path`` then names no
      parameter and the layer is always dense).
    kernel_shape: the kernel's shape (flax layout: spatial..., in/groups,
      out; a dense layer's is ``(fan_in, fan_out)``); for attention
      ``(heads, head_dim)``.
    in_spatial: the input's spatial dims (convs; ``()`` for dense; the
      number of queries ``(Tq,)`` for attention).
    out_spatial: the model's real output spatial dims (convs; the number of
      keys ``(Tk,)`` for attention).
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
    fan-in ``F``; for attention the dense count of the module docstring.
  """
  if op.kind == 'attention':
    (heads, head_dim), (tq,), (tk,) = (op.kernel_shape, op.in_spatial,
                                       op.out_spatial)
    scores = heads * tq * tk
    return float(op.repeats * (scores * (2 * head_dim - 1) + 3 * scores +
                               heads * tq * head_dim * (2 * tk - 1)))
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


def inference_flops(ops: Sequence[LayerOp],
                    sparsities: Optional[Mapping[str, float]] = None,
                    padding: str = 'same') -> float:
  """Forward FLOPs per example, each layer scaled by its density.

  Args:
    ops: the model's layers (`model_flops.layer_ops`).
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
  """``{path: measured sparsity}`` of every mask leaf (as from
  ``rigl_jax.get_masks``)."""
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

  Sparsities are the realised ones, ``floor(s * N) / N`` zeros per layer
  (per stacked layer with ``stacked=``), as the masks will have them.
  """
  tree = distributions.sparsity_distribution(params, sparsity, distribution,
                                             **kwargs)
  flat, _ = jax.tree_util.tree_flatten_with_path(tree)
  shapes = dict(zip(paths_lib.leaf_paths(params),
                    [np.shape(x) for x in jax.tree.leaves(params)]))
  rules = layers_lib.parse_stacked(kwargs.get('stacked'))
  out = {}
  for path, s in flat:
    name = paths_lib.path_str(path)
    shape = tuple(shapes[name])
    layer = layers_lib.layer_shape(
        shape, layers_lib.stack_axis(rules, name, shape))
    out[name] = distributions.num_zeros(
        layer, s, kwargs.get('sparsity_budget', 'exact')) / math.prod(layer)
  return out


def training_flops(method: Union[str, methods_lib.Method],
                   ops: Sequence[LayerOp],
                   sparsities: Mapping[str, float], *, total_steps: int,
                   update_freq: int = 100, begin_step: int = 0,
                   end_step: Optional[int] = None,
                   pruning_initial_sparsity: float = 0.0,
                   padding: str = 'same',
                   global_sparsity: Optional[float] = None) -> float:
  """Training FLOPs per example summed over ``total_steps`` steps.

  Args:
    method: a registered method name (`rigl_jax.methods.names`) or a
      `rigl_jax.Method`; its ``training_cost`` says how a step counts.
    ops: the model's layers (`model_flops.layer_ops`).
    sparsities: the final per-layer sparsities (``{path: sparsity}``).
    total_steps: number of training steps.
    update_freq: steps between mask updates (RigL's ``dT``; the pruning
      interval).
    begin_step: first mask update / pruning step.
    end_step: last mask update / end of pruning (default ``total_steps``).
    pruning_initial_sparsity: ``s_i`` of the pruning schedule.
    padding: see `inference_flops`.
    global_sparsity: the run's sparsity (Top-KAST's backward sets scale
      from it when its ``backward_sparsity`` is set).

  Returns:
    Sum over steps of each step's FLOPs for one example.
  """
  cost = methods_lib.get_method(method).training_cost
  end_step = total_steps if end_step is None else end_step
  f_d = inference_flops(ops, None, padding)
  f_s = inference_flops(ops, sparsities, padding)
  if cost == 'dense':
    return 3 * f_d * total_steps
  if cost == 'sparse':
    return 3 * f_s * total_steps
  if cost == 'dense_gradient':
    return (2 * f_s + f_d) * total_steps
  if cost == 'topkast':  # forward, input gradient on A; weight gradient on B
    m = methods_lib.get_method(method)
    if global_sparsity is None and m.backward_sparsity is not None:
      raise ValueError('Top-KAST with a backward_sparsity needs the run\'s '
                       'global_sparsity to size its backward sets')
    g = 0.0 if global_sparsity is None else global_sparsity
    f_b = inference_flops(
        ops, {p: m.backward_sparsity_of(s, g) for p, s in sparsities.items()},
        padding)
    return (2 * f_s + f_b) * total_steps
  if cost == 'dense_gradient_on_update':
    updating = max(0, min(end_step, total_steps) - begin_step)
    per_update_window = (3 * f_s * update_freq + 2 * f_s + f_d) / (
        update_freq + 1)
    return per_update_window * updating + 3 * f_s * (total_steps - updating)
  if cost == 'pruning_schedule_dense_gradient_on_update':  # GraNet
    m = methods_lib.get_method(method)
    f_init = inference_flops(
        ops, {p: min(m.initial_sparsity, s) for p, s in sparsities.items()},
        padding)
    window = granet_lib.prune_end(begin_step, end_step, m.prune_fraction)
    total, forward = _pruned(f_init, f_s, begin_step, window, total_steps,
                             update_freq)
    for u in range(begin_step, min(end_step, total_steps), update_freq):
      total += f_d - forward(u)  # the update step's dense weight gradient
    return total
  f_init = inference_flops(
      ops, {p: pruning_initial_sparsity for p in sparsities}, padding)
  return _pruned(f_init, f_s, begin_step, end_step, total_steps,
                 update_freq)[0]


def _pruned(f_init: float, f_final: float, begin_step: int, end_step: int,
            total_steps: int, update_freq: int):
  """3 f(s_t) summed along the cubic schedule, and ``t -> f(s_t)``.

  Every layer follows s_t = s_f + (s_i - s_f)(1 - p)^3, i.e. it is a
  fraction L(t) = 1 - (1 - p)^3 of the way from s_i to its s_f; FLOPs are
  linear in each layer's density, hence in L. The masks change at the
  pruning steps (every ``update_freq`` from ``begin_step`` to
  ``end_step``) and hold in between.
  """
  def forward(step):
    level = 1.0 if end_step <= begin_step else float(
        schedules.pruning_sparsity(
            step, initial_sparsity=0.0, final_sparsity=1.0,
            begin_step=begin_step, end_step=end_step))
    return f_init + (f_final - f_init) * level

  total = 3 * f_init * min(begin_step, total_steps)
  updates = list(range(begin_step, min(end_step, total_steps - 1) + 1,
                       update_freq))
  for u, nxt in zip(updates, updates[1:] + [total_steps]):
    total += 3 * forward(u) * (nxt - u)
  return total, lambda step: forward(
      max(u for u in updates if u <= step) if updates and step >= updates[0]
      else begin_step)
