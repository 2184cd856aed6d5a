"""What a sparse-training method is: a small strategy object.

The transform (`rigl_jax.sparsify`) owns what all methods share: the
schedule, masking the gradients and updates, skipping the step, zeroing and
resetting the optimizer state where masks change, stacked layers. A method
says only

- whether it is sparse at all and whether its masks change (`dense`,
  `static`);
- how it changes them: `Method.update_masks` gets a `MaskContext` and
  returns the new masks; `DropAndGrow` (SET, RigL, SNFS) does it with a
  per-layer *grow score*, `MagnitudePruning` with the cubic schedule;
- the state it keeps for that (`init_aux`, `update_aux`: SNFS's gradient
  average), and whether a mask update replaces the weight update
  (Algorithm 1 of Evci et al. 2020).

A new method is a subclass (or a `DropAndGrow` with a new score) in a file of
its own and one `rigl_jax.methods.register` call; `sparsify` accepts the
object itself too.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from rigl_jax import mask_update
from rigl_jax import schedules
from rigl_jax import selection
from rigl_jax import structure as structure_lib

# (weight, dense_grad, aux, key) -> non-negative scores, for ONE layer.
GrowScore = Callable[[jax.Array, jax.Array, Any, jax.Array], jax.Array]


class MaskContext(NamedTuple):
  """What a mask rule sees at a mask update; one entry per sparse leaf, each
  array in its layer view ``(L, *layer_shape)``.

  Attributes:
    weights: the weights before this step's update.
    stepped: the weights after this step's update (what pruning ranks).
    grads: the dense gradients of this step.
    masks: the current masks.
    aux: the method's state of each leaf (None where it keeps none).
    sparsities: each leaf's final sparsity (the distribution's; Python
      floats).
    fixed: whether ``custom_sparsity`` fixes each leaf's sparsity.
    layer_ids: each leaf's layer numbers (numpy int arrays): the random
      stream of a layer is ``fold_in(key, id)``.
    key: this mask update's PRNG key.
    step: the step (traced int32).
    schedule: the run's `rigl_jax.schedules.MaskSchedule`.
    structure: the sparsity structure (unstructured or N:M).
    sparsity: the global target sparsity.
  """
  weights: list
  stepped: list
  grads: list
  masks: list
  aux: list
  sparsities: list
  fixed: list
  layer_ids: list
  key: jax.Array
  step: jax.Array
  schedule: schedules.MaskSchedule
  structure: structure_lib.Structure
  sparsity: float

  def layer_keys(self, i: int) -> jax.Array:
    """``(L, 2)`` keys of leaf ``i``'s layers."""
    ids = jnp.asarray(self.layer_ids[i], jnp.uint32)
    return jax.vmap(jax.random.fold_in, (None, 0))(self.key, ids)


# How a method's training step is counted in FLOPs (see `Method`).
TRAINING_COSTS = ('dense', 'sparse', 'dense_gradient',
                  'dense_gradient_on_update', 'pruning_schedule')


class Method:
  """Base class of sparse-training methods; subclasses override the hooks.

  Attributes:
    name: the registry name.
    sparse: False for dense training (no masks at all).
    dynamic: whether masks change on the schedule.
    skips_weight_update: a mask-update step replaces the weight update
      (RigL's Algorithm 1): parameters and their optimizer state stay as they
      were. Otherwise the step's weight update is applied first and the
      masks change after it (SET, SNFS), as in the reference code.
    starts_dense: the initial masks are all True (gradual pruning).
    include_end: masks also change at ``end_step`` itself.
    training_cost: how `rigl_jax.analysis.flops` counts a training step
      (Evci et al. 2020, Appendix H), one of `TRAINING_COSTS`: ``'dense'``
      (3 f_D), ``'sparse'`` (3 f_S), ``'dense_gradient'`` (2 f_S + f_D: a
      dense gradient every step, SNFS), ``'dense_gradient_on_update'``
      (a dense gradient on mask-update steps only, RigL) or
      ``'pruning_schedule'`` (3 f(s_t) along the pruning schedule).
  """
  name: str = 'method'
  sparse: bool = True
  dynamic: bool = True
  skips_weight_update: bool = False
  starts_dense: bool = False
  include_end: bool = False
  training_cost: str = 'sparse'

  def validate(self, *, structure: structure_lib.Structure,
               custom_sparsity: dict[str, float]) -> None:
    """Raises ValueError for options this method cannot honour."""
    del structure, custom_sparsity

  def init_aux(self, params: Any, masks: Any) -> Any:
    """The method's own state: ``()`` or a pytree like ``masks``."""
    del params, masks
    return ()

  def update_aux(self, aux: Any, grads: Any, masks: Any) -> Any:
    """Advances the method's state on every step."""
    del grads, masks
    return aux

  def update_masks(self, ctx: MaskContext
                   ) -> tuple[list[jax.Array], jax.Array]:
    """The new masks (layer views) and the drop fraction to report."""
    raise NotImplementedError

  def __repr__(self) -> str:
    return f'{type(self).__name__}({self.name!r})'


class DropAndGrow(Method):
  """Dynamic sparse training: drop the smallest-magnitude active weights of
  every layer, grow as many by ``grow_score`` (SET, RigL, SNFS).

  The order of a mask-update step follows google-research/rigl: SET and
  SNFS apply the optimizer step and then update the masks, ranking the
  updated weights (`SparseSETOptimizerBase.apply_gradients`,
  rigl/sparse_optimizers_base.py:133-146); RigL replaces the step by the
  mask update (`SparseRigLOptimizerBase.apply_gradients`, lines 502-521,
  the paper's Algorithm 1).

  Args:
    name: the method's name.
    grow_score: ``(weight, grad, aux, key) -> scores`` for one layer.
    redistribute: share the regrowth across layers by the mean score of
      their active weights (SNFS), leaving leaves that ``custom_sparsity``
      fixes alone.
    training_cost: see `Method`; by default a grow score is taken to need
      the dense gradient on mask-update steps only, as RigL's does.
    skips_weight_update: see `Method`: True, the mask update replaces that
      step's weight update (RigL); False (default), the step is applied and
      the masks change after it (SET, SNFS).
  """

  def __init__(self, name: str, grow_score: GrowScore,
               redistribute: bool = False,
               training_cost: str = 'dense_gradient_on_update',
               skips_weight_update: bool = False):
    if training_cost not in TRAINING_COSTS:
      raise ValueError(f'unknown training_cost {training_cost!r}; valid: '
                       f'{list(TRAINING_COSTS)}')
    self.name = name
    self.grow_score = grow_score
    self.redistribute = bool(redistribute)
    self.training_cost = training_cost
    self.skips_weight_update = bool(skips_weight_update)

  def validate(self, *, structure, custom_sparsity) -> None:
    if self.redistribute and structure.sparsity is not None:
      raise ValueError('snfs_redistribution moves connections between '
                       'layers, which an N:M structure forbids')

  def scores(self, ctx: MaskContext) -> list[jax.Array]:
    """Grow scores of every leaf (layer views)."""
    return [jax.vmap(self.grow_score)(w, g, a, ctx.layer_keys(i))
            for i, (w, g, a) in enumerate(zip(
                ctx.weights, ctx.grads, _aux_per_layer(ctx)))]

  def update_masks(self, ctx: MaskContext):
    fraction = ctx.schedule.drop_fraction_at(ctx.step)
    # The weights the masks are updated on: as they were (the step is
    # replaced), or after this step's update.
    weights = ctx.weights if self.skips_weight_update else ctx.stepped
    kept, n_drop = mask_update.drop(weights, ctx.masks, fraction)
    scores = self.scores(ctx)
    n_grow = (mask_update.redistribute(n_drop, kept, ctx.masks, scores,
                                       ctx.fixed)
              if self.redistribute else n_drop)
    return mask_update.grow(kept, scores, n_grow, ctx.structure), fraction


def _aux_per_layer(ctx: MaskContext) -> list:
  """The aux of each leaf, or zeros to vmap over where there is none."""
  return [jnp.zeros(w.shape[:1], jnp.float32) if a is None else a
          for w, a in zip(ctx.weights, ctx.aux)]


class MagnitudePruning(Method):
  """Gradual magnitude pruning (Zhu & Gupta 2017): from dense (or
  ``initial_sparsity``) to each leaf's sparsity on the cubic schedule,
  ranking the weights after this step's update; pruned weights never return.

  Args:
    scope: ``'layer'`` (each layer to its own target) or ``'global'`` (all
      sparse weights ranked together against the global target).
    initial_sparsity: s_i of the cubic schedule.
  """
  name = 'pruning'
  starts_dense = True
  training_cost = 'pruning_schedule'
  include_end = True
  SCOPES = ('layer', 'global')

  def __init__(self, scope: str = 'layer', initial_sparsity: float = 0.0):
    if scope not in self.SCOPES:
      raise ValueError(f'unknown pruning scope {scope!r}; valid choices are '
                       f'{list(self.SCOPES)}')
    if not 0.0 <= float(initial_sparsity) < 1.0:
      raise ValueError('pruning initial_sparsity must be in [0, 1); got '
                       f'{initial_sparsity}')
    self.scope = scope
    self.initial_sparsity = float(initial_sparsity)

  def validate(self, *, structure, custom_sparsity) -> None:
    if self.scope == 'global' and structure.sparsity is not None:
      raise ValueError("pruning_scope='global' cannot keep an N:M "
                       "structure; use pruning_scope='layer'")

  def update_masks(self, ctx: MaskContext):
    magnitudes = [jnp.abs(w) for w in ctx.stepped]
    old = sum(selection.count_true(m) for m in ctx.masks)
    if self.scope == 'global':
      target = ctx.schedule.pruning_sparsity_at(
          ctx.step, min(self.initial_sparsity, ctx.sparsity), ctx.sparsity)
      new = mask_update.prune_global(magnitudes, ctx.masks, target)
    else:
      # A leaf whose final sparsity (ERK) is below s_i starts at its final
      # one: pruned weights never come back, so it could not get there.
      targets = [ctx.schedule.pruning_sparsity_at(
          ctx.step, min(self.initial_sparsity, s), s)
                 for s in ctx.sparsities]
      new = mask_update.prune_layers(magnitudes, ctx.masks, targets,
                                     ctx.structure)
    removed = old - sum(selection.count_true(m) for m in new)
    return new, removed / jnp.maximum(old, 1).astype(jnp.float32)
