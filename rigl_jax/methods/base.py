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
from typing import Any, NamedTuple, Optional

import jax
import jax.numpy as jnp

from rigl_jax import mask_update
from rigl_jax import schedules
from rigl_jax import selection
from rigl_jax import structure as structure_lib

# (weight, dense_grad, aux, key) -> non-negative scores, for ONE layer.
GrowScore = Callable[[jax.Array, jax.Array, Any, jax.Array], jax.Array]

# The values new connections start at (`get_grow_tensor`, google-research/
# rigl rigl/sparse_optimizers_base.py:355-399 and, for RigL's gradient ones,
# 540-557), each optionally divided by K with a ``_K`` suffix
# ('random_normal_2'): 'zeros'; 'random_normal', N(0, std) with the std of
# the layer's active weights; 'random_uniform', U(-a, a) with a the mean
# |active weight|; 'grad_scale', the dense gradient; 'grad_sign', its sign.
# The reference takes the std / mean over the whole weight variable, whose
# inactive entries still hold stale values (masking happens in the forward
# pass); here inactive weights are exactly 0, so the active ones stand in.
GROW_INITS = ('zeros', 'random_normal', 'random_uniform')
GRADIENT_GROW_INITS = ('grad_scale', 'grad_sign')
ALL_GROW_INITS = GROW_INITS + GRADIENT_GROW_INITS

# The reference's drop-score noise (`generic_mask_update(noise_std=1e-5)`,
# google-research/rigl rigl/sparse_optimizers_base.py:260).
DROP_NOISE_STD = 1e-5

# Random streams of a mask update, folded into its key (SET's regrowth
# keeps the key itself, as before these existed).
_DROP_NOISE_STREAM = 1
_GROW_INIT_STREAM = 2


def parse_grow_init(name: str, allowed: tuple[str, ...] = GROW_INITS
                    ) -> tuple[str, float]:
  """``'random_normal_2'`` -> ``('random_normal', 2.0)``.

  Args:
    name: a grow initialisation, optionally with a ``_K`` divisor (K > 0),
      as the reference's ``extract_number`` reads it.
    allowed: the kinds the method offers.

  Returns:
    ``(kind, divisor)``.

  Raises:
    ValueError: an unknown kind or a bad divisor, listing the valid ones.

  Example:
    >>> parse_grow_init('random_normal_2')
    ('random_normal', 2.0)
    >>> parse_grow_init('zeros')
    ('zeros', 1.0)
  """
  for kind in allowed:
    if name == kind:
      return kind, 1.0
    if isinstance(name, str) and name.startswith(kind + '_'):
      try:
        divisor = float(name[len(kind) + 1:])
      except ValueError:
        break
      if divisor > 0:
        return kind, divisor
      break
  raise ValueError(f'unknown grow_init {name!r}; valid: {list(allowed)}, '
                   "each optionally with a '_K' divisor (K > 0), e.g. "
                   "'random_normal_2'")


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

  def layer_keys(self, i: int, stream: int = 0) -> jax.Array:
    """``(L, 2)`` keys of leaf ``i``'s layers (``stream`` > 0: another
    independent random stream)."""
    ids = jnp.asarray(self.layer_ids[i], jnp.uint32)
    key = self.key if not stream else jax.random.fold_in(self.key, stream)
    return jax.vmap(jax.random.fold_in, (None, 0))(key, ids)


# How a method's training step is counted in FLOPs (see `Method`).
TRAINING_COSTS = ('dense', 'sparse', 'dense_gradient',
                  'dense_gradient_on_update', 'pruning_schedule',
                  'pruning_schedule_dense_gradient_on_update', 'topkast')


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
    single_update: the masks change once, at ``begin_step`` (SNIP), and
      ``end_step`` / ``update_freq`` do not apply.
    grow_init: what new connections start at (see `GROW_INITS`);
      'zeros' unless the method says otherwise (`grow_values`).
    acc_scale: the optimizer state (momentum) of a new connection starts at
      ``acc_scale * gradient`` instead of 0 (RigL's ``initial_acc_scale``).
    training_cost: how `rigl_jax.analysis.flops` counts a training step
      (Evci et al. 2020, Appendix H), one of `TRAINING_COSTS`: ``'dense'``
      (3 f_D), ``'sparse'`` (3 f_S), ``'dense_gradient'`` (2 f_S + f_D: a
      dense gradient every step, SNFS), ``'dense_gradient_on_update'``
      (a dense gradient on mask-update steps only, RigL) or
      ``'pruning_schedule'`` (3 f(s_t) along the pruning schedule) or
      ``'pruning_schedule_dense_gradient_on_update'`` (that, plus a dense
      weight gradient on every mask-update step: GraNet) or ``'topkast'``
      (2 f_A + f_B: forward and input gradients at the forward density,
      the weight gradient at the backward set's).
    keeps_dense_weights: the method keeps dense weights θ of its own (in
      ``aux``) and shows the model θ masked (Top-KAST); the transform then
      updates θ and derives the parameters from it.
  """
  name: str = 'method'
  sparse: bool = True
  dynamic: bool = True
  skips_weight_update: bool = False
  starts_dense: bool = False
  include_end: bool = False
  single_update: bool = False
  training_cost: str = 'sparse'
  grow_init: str = 'zeros'
  acc_scale: float = 0.0
  keeps_dense_weights: bool = False
  # A global sparsity for the random initial masks other than the final one
  # (GraNet's sparse start), drawn with the run's distribution; None: the
  # final one.
  initial_global_sparsity: Optional[float] = None

  def validate(self, *, structure: structure_lib.Structure,
               custom_sparsity: dict[str, float]) -> None:
    """Raises ValueError for options this method cannot honour."""
    del structure, custom_sparsity

  @property
  def has_initial_masks(self) -> bool:
    """Whether the method draws its own initial masks (`initial_masks`)."""
    return type(self).initial_masks is not Method.initial_masks

  def initial_masks(self, keys: jax.Array, layer_shape: tuple[int, ...],
                    sparsity: float) -> jax.Array:
    """Random initial masks of one leaf's layers, ``(L, *layer_shape)``
    from ``(L, 2)`` keys; by default (not overridden) the transform draws
    uniformly random masks with the layer's exact count."""
    raise NotImplementedError

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

  def grow_values(self, ctx: MaskContext, new_masks: list[jax.Array]
                  ) -> list[jax.Array]:
    """The values new connections start at (layer views; read only where
    ``new_masks`` is True and the old mask False). Called only when
    ``grow_init`` is not 'zeros'."""
    del ctx
    return [jnp.zeros(m.shape, jnp.float32) for m in new_masks]

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
    grow_init: what new connections start at: one of ``grow_inits``, with
      an optional ``_K`` divisor (see `GROW_INITS`); 'zeros' by default,
      as in the reference.
    grow_inits: the grow initialisations this method offers.
    noise_std: std of Gaussian noise added to the drop scores |w| of the
      active weights, which breaks ties at random (the reference's
      ``generic_mask_update(noise_std=1e-5)``, sparse_optimizers_base.py:
      260-270; it adds the noise at inactive positions too, which could
      then be "kept", here only active weights compete). 0: no noise,
      ties broken by position.
    acc_scale: see `Method`.
  """

  def __init__(self, name: str, grow_score: GrowScore,
               redistribute: bool = False,
               training_cost: str = 'dense_gradient_on_update',
               skips_weight_update: bool = False,
               grow_init: str = 'zeros',
               grow_inits: tuple[str, ...] = GROW_INITS,
               noise_std: float = 0.0,
               acc_scale: float = 0.0):
    if training_cost not in TRAINING_COSTS:
      raise ValueError(f'unknown training_cost {training_cost!r}; valid: '
                       f'{list(TRAINING_COSTS)}')
    self._grow_kind, self._grow_divisor = parse_grow_init(grow_init,
                                                          grow_inits)
    if not float(noise_std) >= 0.0:
      raise ValueError(f'noise_std must be >= 0; got {noise_std}')
    if not float(acc_scale) >= 0.0:
      raise ValueError(f'acc_scale must be >= 0; got {acc_scale}')
    self.name = name
    self.grow_score = grow_score
    self.redistribute = bool(redistribute)
    self.training_cost = training_cost
    self.skips_weight_update = bool(skips_weight_update)
    self.grow_init = grow_init
    self.noise_std = float(noise_std)
    self.acc_scale = float(acc_scale)

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
    weights = self.mask_weights(ctx)
    scores = [jnp.abs(w) for w in weights]
    if self.noise_std:
      # |w| + N(0, noise_std^2), shifted by 6 std so that the scores stay
      # non-negative (the selection counts negative scores as 0); a shift
      # common to a layer leaves its ranking as it was.
      scores = [s.astype(jnp.float32) + self.noise_std * (6.0 + jax.vmap(
          lambda k, x: jax.random.normal(k, x.shape, jnp.float32))(
              ctx.layer_keys(i, _DROP_NOISE_STREAM), s))
                for i, s in enumerate(scores)]
    kept, n_drop = mask_update.drop(scores, ctx.masks, fraction)
    scores = self.scores(ctx)
    n_grow = (mask_update.redistribute(n_drop, kept, ctx.masks, scores,
                                       ctx.fixed)
              if self.redistribute else n_drop)
    return mask_update.grow(kept, scores, n_grow, ctx.structure), fraction

  def mask_weights(self, ctx: MaskContext) -> list[jax.Array]:
    """The weights the masks change on: as they were (the step replaced)
    or after this step's update."""
    return ctx.weights if self.skips_weight_update else ctx.stepped

  def grow_values(self, ctx: MaskContext, new_masks: list[jax.Array]
                  ) -> list[jax.Array]:
    kind, divisor = self._grow_kind, self._grow_divisor
    out = []
    for i, (w, g, m) in enumerate(zip(self.mask_weights(ctx), ctx.grads,
                                      ctx.masks)):
      w32 = w.astype(jnp.float32)
      if kind == 'grad_scale':
        v = g.astype(jnp.float32)
      elif kind == 'grad_sign':
        v = jnp.sign(g.astype(jnp.float32))
      elif kind == 'zeros':
        v = jnp.zeros(w.shape, jnp.float32)
      else:
        keys = ctx.layer_keys(i, _GROW_INIT_STREAM)
        axes = tuple(range(1, w.ndim))
        n = jnp.maximum(jnp.sum(m, axes, keepdims=True), 1)
        mean_abs = jnp.sum(jnp.where(m, jnp.abs(w32), 0.0), axes,
                           keepdims=True) / n
        if kind == 'random_normal':
          mean = jnp.sum(jnp.where(m, w32, 0.0), axes, keepdims=True) / n
          std = jnp.sqrt(jnp.sum(jnp.where(m, (w32 - mean) ** 2, 0.0), axes,
                                 keepdims=True) / n)
          v = std * jax.vmap(
              lambda k: jax.random.normal(k, w.shape[1:]))(keys)
        else:  # random_uniform
          v = mean_abs * jax.vmap(lambda k: jax.random.uniform(
              k, w.shape[1:], minval=-1.0, maxval=1.0))(keys)
      out.append(v / divisor)
    return out


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
