"""The optax wrapper: sparse training around any inner optax optimizer.

``sparsify(inner, method, ...)`` returns an `optax.GradientTransformationExtraArgs`
whose state holds the masks, the inner optimizer's state and the method's own
state. On every step it

1. hands the inner optimizer the gradients of the active weights only and
   returns updates that keep every inactive weight exactly zero;
2. on mask-update steps (every ``update_freq`` steps in
   ``[begin_step, end_step)``) runs the method's rule under `jax.lax.cond`
   instead of the weight update (Algorithm 1 of Evci et al. 2020): drop the
   ``floor(drop_fraction(t) * nnz)`` smallest-magnitude active weights of
   each sparse leaf and grow as many connections, starting at exactly zero
   with their inner-optimizer state (momentum, Adam moments, ...) reset.

The gradients passed to ``update`` must be those of the loss w.r.t. the
(masked) parameters, i.e. what `jax.grad` gives when the model uses the
stored params directly; they are dense, which is what RigL grows by.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np
import optax

from rigl_jax import distributions
from rigl_jax import masks as masks_lib
from rigl_jax import methods as methods_lib
from rigl_jax import paths as paths_lib
from rigl_jax import schedules
from rigl_jax import selection
from rigl_jax import structure as structure_lib
from rigl_jax.methods.snfs import redistribute_counts


class SparseState(NamedTuple):
  """State of `sparsify`.

  Attributes:
    step: number of ``update`` calls so far (int32).
    masks: a bool array per sparse leaf, None per dense leaf.
    inner_state: the wrapped optimizer's state.
    aux: the method's own state (SNFS: EMA of the dense gradients).
    drop_fraction: the drop fraction used by the last mask update (for
      pruning: the fraction of active weights it removed).
    mask_churn: fraction of the active connections that the last mask update
      removed (and, for dynamic methods, replaced).
  """
  step: jax.Array
  masks: Any
  inner_state: optax.OptState
  aux: Any
  drop_fraction: jax.Array
  mask_churn: jax.Array


def _floor_product(fraction: jax.Array, count: jax.Array) -> jax.Array:
  """floor(fraction * count) as int32, robust to float32 error (0.7 * 10)."""
  x = fraction.astype(jnp.float32) * count.astype(jnp.float32)
  r = jnp.round(x)
  return jnp.where(jnp.abs(x - r) < 1e-3, r, jnp.floor(x)).astype(jnp.int32)


def _param_subtrees_map(fn, state: Any, params: Any, *trees: Any) -> Any:
  """Applies ``fn(state_leaf, *tree_leaves)`` to every state subtree that
  mirrors ``params`` (same tree structure and leaf shapes); other state
  leaves are returned unchanged. Works for any optax optimizer."""
  p_def = jax.tree.structure(params)
  p_shapes = [np.shape(x) for x in jax.tree.leaves(params)]

  def mirrors(x):
    if isinstance(x, SparseState):
      return False
    try:
      if jax.tree.structure(x) != p_def:
        return False
    except Exception:  # pylint: disable=broad-except
      return False
    return [np.shape(y) for y in jax.tree.leaves(x)] == p_shapes

  def visit(x):
    if mirrors(x):
      return jax.tree.map(fn, x, *trees)
    return x

  return jax.tree.map(visit, state, is_leaf=mirrors)


def _nm_random_masks(params: Any, flags: Any, nm: structure_lib.NM,
                     key: jax.Array) -> Any:
  """Random N:M masks for the sparse leaves, after checking their shapes
  (only the checks if ``key`` is None)."""
  flat, treedef = jax.tree_util.tree_flatten_with_path(params)
  out = []
  for i, ((path, p), f) in enumerate(zip(flat, jax.tree.leaves(flags))):
    if not f:
      out.append(None)
      continue
    structure_lib.check_shape(paths_lib.path_str(path), np.shape(p), nm)
    out.append(None if key is None else structure_lib.random_mask(
        jax.random.fold_in(key, i), np.shape(p), nm))
  return jax.tree.unflatten(treedef, out)


def _check_schedule_args(kind: str, update_freq: Any, begin_step: Any,
                         end_step: Any, drop_fraction: float) -> None:
  if not isinstance(update_freq, (int, np.integer)) or update_freq < 1:
    raise ValueError(f'update_freq must be an integer >= 1; got '
                     f'{update_freq!r}')
  if not isinstance(begin_step, (int, np.integer)) or begin_step < 0:
    raise ValueError(f'begin_step must be an integer >= 0; got '
                     f'{begin_step!r}')
  if kind in ('dst', 'pruning'):
    if end_step is None:
      raise ValueError('end_step is required for dynamic sparse training and '
                       'pruning: the last step at which masks change')
    if not isinstance(end_step, (int, np.integer)) or end_step <= begin_step:
      raise ValueError(f'end_step must be an integer > begin_step '
                       f'({begin_step}); got {end_step!r}')
  if not 0.0 <= float(drop_fraction) <= 1.0:
    raise ValueError(f'drop_fraction must be in [0, 1]; got {drop_fraction!r}')


def sparsify(inner: optax.GradientTransformation,
             method: str,
             *,
             sparsity: float,
             distribution: str = 'erk',
             update_freq: int = 100,
             begin_step: int = 0,
             end_step: Optional[int] = None,
             drop_fraction: float = 0.3,
             drop_fraction_schedule: str = 'cosine',
             init_masks: Any = None,
             is_sparse: paths_lib.IsSparse = None,
             custom_sparsity: Optional[Mapping[str, float]] = None,
             seed: int = 0,
             erk_power_scale: float = 1.0,
             snfs_momentum: float = 0.9,
             snfs_redistribution: bool = False,
             pruning_scope: str = 'layer',
             pruning_initial_sparsity: float = 0.0,
             structure: Any = 'unstructured',
             ) -> optax.GradientTransformationExtraArgs:
  """Wraps ``inner`` so that it trains a sparse network.

  Args:
    inner: any optax optimizer (e.g. ``optax.sgd(0.1, momentum=0.9)`` or an
      ``optax.chain``).
    method: ``'dense'``, ``'static'``, ``'set'``, ``'snfs'``, ``'rigl'`` or
      ``'pruning'``.
    sparsity: the global fraction of zeros over the sparse leaves, in [0, 1).
    distribution: per-layer sparsity: ``'erk'``, ``'er'`` or ``'uniform'``.
    update_freq: steps between mask updates (Delta T).
    begin_step: first mask-update step.
    end_step: masks stop changing at this step (T_end); required for
      ``set``, ``snfs``, ``rigl`` and ``pruning``.
    drop_fraction: alpha, the initial fraction of active weights replaced.
    drop_fraction_schedule: ``'cosine'``, ``'constant'`` or
      ``'exponential_K'``.
    init_masks: optional masks to start from (a pytree like params with a
      bool array per sparse leaf); each leaf's nnz then comes from them.
    is_sparse: which leaves are sparse: None (kernels with ndim >= 2), path
      regexes, or a ``(path, leaf) -> bool`` predicate.
    custom_sparsity: ``{path or regex: sparsity}`` overrides, left out of the
      distribution's budget.
    seed: seed of the random initial masks (and of SET's regrowth).
    erk_power_scale: exponent of the ER/ERK raw densities.
    snfs_momentum: SNFS's EMA decay of the dense gradients.
    snfs_redistribution: SNFS's cross-layer redistribution of regrowth.
    pruning_scope: ``'layer'`` or ``'global'`` magnitude ranking.
    pruning_initial_sparsity: s_i of the pruning schedule (capped at each
      leaf's final sparsity, or at ``sparsity`` for the global scope).
    structure: ``'unstructured'``, or ``'N:M'`` (e.g. ``'2:4'``): every
      sparse kernel keeps exactly N nonzeros in each group of M along its
      input dimension (see `rigl_jax.structure`); ``sparsity`` must then be
      1 - N/M, and drops/growths stay within the structure.

  Returns:
    An `optax.GradientTransformationExtraArgs`. Its ``update`` requires
    ``params``; extra keyword arguments are passed to ``inner``. Call
    `masked_init` (or mask the params with `apply_masks` and `get_masks`)
    so that the model never sees an unmasked weight.

  Raises:
    ValueError: for an unknown method, distribution or schedule, a sparsity
      outside [0, 1), ``update_freq < 1`` or ``end_step <= begin_step``.
      Problems that need the params (bad ``init_masks``, unknown
      ``custom_sparsity`` paths, unreachable ERK targets) raise at ``init``.

  Example:
    >>> import jax.numpy as jnp, optax, rigl_jax
    >>> params = {'w': jnp.ones((4, 8)), 'b': jnp.zeros(8)}
    >>> tx = rigl_jax.sparsify(optax.sgd(0.1), 'rigl', sparsity=0.5,
    ...                        distribution='uniform', end_step=1000)
    >>> params, state = rigl_jax.masked_init(tx, params)
    >>> int(rigl_jax.get_masks(state)['w'].sum())
    16
  """
  m = methods_lib.get_method(
      method, snfs_momentum=snfs_momentum,
      snfs_redistribution=snfs_redistribution, pruning_scope=pruning_scope,
      pruning_initial_sparsity=pruning_initial_sparsity)
  sparsity = distributions.check_sparsity(sparsity)
  if distribution not in distributions.DISTRIBUTIONS:
    raise ValueError(f'unknown sparsity distribution {distribution!r}; valid '
                     f'choices are {list(distributions.DISTRIBUTIONS)}')
  schedules.parse_drop_fraction_schedule(drop_fraction_schedule)
  _check_schedule_args(m.kind, update_freq, begin_step, end_step,
                       drop_fraction)
  paths_lib.make_is_sparse(is_sparse)
  custom_sparsity = dict(custom_sparsity or {})
  nm = structure_lib.parse(structure)
  if nm is not None and m.kind != 'dense':
    if abs(sparsity - structure_lib.sparsity_of(nm)) > 1e-6:
      raise ValueError(
          f'structure {nm[0]}:{nm[1]} fixes every sparse layer at sparsity '
          f'{structure_lib.sparsity_of(nm):g} (1 - N/M); got sparsity='
          f'{sparsity:g}')
    if custom_sparsity:
      raise ValueError('custom_sparsity cannot be combined with an N:M '
                       'structure; exclude layers with is_sparse instead')
    if m.redistribute:
      raise ValueError('snfs_redistribution moves connections between '
                       'layers, which an N:M structure forbids')
    if m.kind == 'pruning' and m.global_scope:
      raise ValueError("pruning_scope='global' cannot keep an N:M "
                       "structure; use pruning_scope='layer'")
  seed = int(seed)

  def leaf_flags(params):
    if m.kind == 'dense':
      return jax.tree.map(lambda _: False, params)
    return paths_lib.sparse_leaf_flags(params, is_sparse)

  def leaf_sparsities(params):
    if nm is not None:
      return jax.tree.map(
          lambda f: structure_lib.sparsity_of(nm) if f else 0.0,
          paths_lib.sparse_leaf_flags(params, is_sparse))
    return distributions.sparsity_distribution(
        params, sparsity, distribution, is_sparse=is_sparse,
        custom_sparsity=custom_sparsity, erk_power_scale=erk_power_scale)

  def init_fn(params):
    flags = leaf_flags(params)
    if m.kind == 'dense':
      masks = jax.tree.map(lambda _: None, params)
    elif init_masks is not None:
      masks = masks_lib.check_init_masks(init_masks, params, flags)
    elif m.kind == 'pruning':
      masks = masks_lib.sparse_masks_like(params, flags, True)
      if nm is not None:
        _nm_random_masks(params, flags, nm, None)  # shape checks only
    elif nm is not None:
      masks = _nm_random_masks(params, flags, nm, jax.random.PRNGKey(seed))
    else:
      masks = masks_lib.random_masks(params, leaf_sparsities(params), flags,
                                     jax.random.PRNGKey(seed))
    if m.kind == 'pruning' and not m.global_scope:
      leaf_sparsities(params)  # validate custom paths / targets early
    masked = masks_lib.apply_masks(params, masks)
    return SparseState(
        step=jnp.zeros([], jnp.int32),
        masks=masks,
        inner_state=inner.init(masked),
        aux=m.init_aux(params, masks),
        drop_fraction=jnp.zeros([], jnp.float32),
        mask_churn=jnp.zeros([], jnp.float32))

  def inner_step(grads, state, params, masks, extra_args):
    """The ordinary step: inner update on active weights, zeros elsewhere."""
    active_grads = masks_lib.map_masked(
        lambda mk, g: g if mk is None else jnp.where(mk, g, jnp.zeros_like(g)),
        masks, grads)
    updates, inner_state = inner.update(active_grads, state.inner_state,
                                        params, **extra_args)
    updates = masks_lib.map_masked(
        lambda mk, u, p: u if mk is None else
        jnp.where(mk, u, (-p).astype(u.dtype)), masks, updates, params)
    return updates, inner_state

  def churn(old_masks, new_masks):
    removed, active = jnp.zeros([], jnp.int32), jnp.zeros([], jnp.int32)
    for o, n in zip(jax.tree.leaves(old_masks), jax.tree.leaves(new_masks)):
      removed += jnp.sum(o & ~n, dtype=jnp.int32)
      active += jnp.sum(o, dtype=jnp.int32)
    return removed / jnp.maximum(active, 1).astype(jnp.float32)

  def dst_masks(params, grads, masks, aux, step):
    """Drop by magnitude and regrow by the method's scores, per sparse leaf."""
    frac = schedules.drop_fraction(
        step, initial=drop_fraction, schedule=drop_fraction_schedule,
        begin_step=begin_step, end_step=end_step)
    mask_leaves, treedef = jax.tree.flatten(masks, is_leaf=masks_lib.is_none)
    p_leaves = treedef.flatten_up_to(params)
    g_leaves = treedef.flatten_up_to(grads)
    a_leaves = (treedef.flatten_up_to(aux) if aux != ()
                else [None] * len(mask_leaves))
    key = jax.random.fold_in(jax.random.PRNGKey(seed), step)
    idx = [i for i, mk in enumerate(mask_leaves) if mk is not None]

    kept, n_drop, scores = {}, {}, {}
    for i in idx:
      mk, w = mask_leaves[i], p_leaves[i]
      nnz = jnp.sum(mk, dtype=jnp.int32)
      n_drop[i] = _floor_product(frac, nnz)
      kept[i] = selection.top_k_mask(jnp.abs(w), nnz - n_drop[i], valid=mk)
      scores[i] = m.grow_score(w, g_leaves[i], a_leaves[i],
                               jax.random.fold_in(key, i))
    n_grow = dict(n_drop)
    if m.redistribute and idx:
      mean_mag = jnp.stack([
          jnp.sum(jnp.where(mask_leaves[i], scores[i], 0.0)) /
          jnp.maximum(jnp.sum(mask_leaves[i]), 1) for i in idx])
      capacity = jnp.stack(
          [mask_leaves[i].size - jnp.sum(kept[i], dtype=jnp.int32)
           for i in idx])
      total = sum(n_drop[i] for i in idx)
      counts = redistribute_counts(total, mean_mag, capacity)
      n_grow = {i: counts[j] for j, i in enumerate(idx)}

    new_leaves, grown_leaves = list(mask_leaves), list(mask_leaves)
    for i in idx:
      if nm is not None:  # each group regrows what it lost
        grow = structure_lib.regrow(kept[i], scores[i], nm)
      else:
        grow = selection.top_k_mask(scores[i], n_grow[i], valid=~kept[i])
      new_leaves[i] = kept[i] | grow
      grown_leaves[i] = grow & ~mask_leaves[i]
    return (frac, jax.tree.unflatten(treedef, new_leaves),
            jax.tree.unflatten(treedef, grown_leaves))

  def pruned_masks(params, masks, step):
    """Gradual magnitude pruning's masks at ``step`` (from ``params``)."""
    mask_leaves, treedef = jax.tree.flatten(masks, is_leaf=masks_lib.is_none)
    w_leaves = treedef.flatten_up_to(params)
    idx = [i for i, mk in enumerate(mask_leaves) if mk is not None]
    new_leaves = list(mask_leaves)
    if m.global_scope:
      total = sum(mask_leaves[i].size for i in idx)
      target = schedules.pruning_sparsity(
          step, initial_sparsity=min(m.initial_sparsity, sparsity),
          final_sparsity=sparsity, begin_step=begin_step, end_step=end_step)
      n_keep = total - _floor_product(target, jnp.asarray(total))
      keep = selection.top_k_masks([jnp.abs(w_leaves[i]) for i in idx],
                                   n_keep, [mask_leaves[i] for i in idx])
      for i, k in zip(idx, keep):
        new_leaves[i] = k
    else:
      finals = treedef.flatten_up_to(leaf_sparsities(params))
      for i in idx:
        # A leaf whose final sparsity (ERK) is below s_i starts at its final
        # one: pruned weights never come back, so it could not get there.
        target = schedules.pruning_sparsity(
            step, initial_sparsity=min(m.initial_sparsity, finals[i]),
            final_sparsity=finals[i], begin_step=begin_step,
            end_step=end_step)
        size = mask_leaves[i].size
        n_keep = size - _floor_product(target, jnp.asarray(size))
        if nm is not None:
          new_leaves[i] = structure_lib.prune_keep(
              jnp.abs(w_leaves[i]), n_keep, nm, valid=mask_leaves[i])
        else:
          new_leaves[i] = selection.top_k_mask(jnp.abs(w_leaves[i]), n_keep,
                                               valid=mask_leaves[i])
    return jax.tree.unflatten(treedef, new_leaves)

  def update_fn(updates, state, params=None, *, mask_update=None,
                **extra_args):
    """One step. ``mask_update`` (optional, a Python bool known when tracing)
    tells whether this step is a mask-update step, as the schedule says;
    given, the step compiles without `lax.cond` (two programs for the caller
    to pick from on the host, cheaper than one program with both branches).
    Left None, the schedule is evaluated on device."""
    if params is None:
      raise ValueError('sparsify(...).update needs params: call '
                       'tx.update(grads, state, params)')
    if mask_update is not None and not isinstance(mask_update, bool):
      raise ValueError('mask_update must be None, True or False (a Python '
                       f'bool, static under jit); got {mask_update!r}')
    aux = m.update_aux(state.aux, updates, state.masks)
    # The ordinary step is computed on every step; on mask-update steps only
    # the masks come out of a `lax.cond` (small bool outputs), and selects
    # pick what to keep. (On CPU the cond still costs ~1.4x a static step on
    # a small MLP; see benchmarks/sparse_step.py.)
    new_updates, inner_state = inner_step(updates, state, params, state.masks,
                                          extra_args)
    if m.kind in ('dense', 'static') or mask_update is False:
      return new_updates, state._replace(
          step=optax.safe_increment(state.step), inner_state=inner_state,
          aux=aux)

    is_update = schedules.is_update_step(
        state.step, update_freq=update_freq, begin_step=begin_step,
        end_step=end_step, include_end=m.kind == 'pruning')
    no_grown = masks_lib.map_masked(
        lambda mk: None if mk is None else jnp.zeros_like(mk), state.masks)

    # The optimization barrier keeps XLA from hoisting the branch's
    # elementwise work (score keys) out of the conditional, which would run
    # it on every step.
    if m.kind == 'dst':
      def masked_branch(_):
        # The step goes through the barrier too: random grow scores (SET)
        # depend on it alone and would otherwise be drawn on every step.
        p, g, mk, a, t = jax.lax.optimization_barrier(
            (params, updates, state.masks, aux, state.step))
        frac, new_masks, grown = dst_masks(p, g, mk, a, t)
        return frac, churn(mk, new_masks), new_masks, grown
    else:
      stepped = optax.apply_updates(params, new_updates)

      def masked_branch(_):
        p, mk, t = jax.lax.optimization_barrier(
            (stepped, state.masks, state.step))
        new_masks = pruned_masks(p, mk, t)
        removed = churn(mk, new_masks)
        return removed, removed, new_masks, no_grown

    if mask_update:
      is_update = True
      frac, mask_churn, new_masks, grown = masked_branch(None)
    else:
      frac, mask_churn, new_masks, grown = jax.lax.cond(
          is_update, masked_branch,
          lambda _: (state.drop_fraction, state.mask_churn, state.masks,
                     no_grown), None)

    if m.kind == 'dst':
      # Algorithm 1: on a mask update the weight update is skipped; dropped
      # weights are set to zero and grown ones start at zero with their
      # inner-optimizer state reset.
      new_updates = masks_lib.map_masked(
          lambda mk, u, p: jnp.where(is_update, jnp.zeros_like(u), u)
          if mk is None else jnp.where(
              mk, jnp.where(is_update, jnp.zeros_like(u), u),
              (-p).astype(u.dtype)), new_masks, new_updates, params)
      grown_full = masks_lib.map_masked(
          lambda gr, p: jnp.zeros((), jnp.bool_) if gr is None else gr,
          grown, params)
      reset = _param_subtrees_map(
          lambda s, gr: jnp.where(gr, jnp.zeros_like(s), s)
          if gr.ndim == 0 or np.shape(s) == gr.shape else s,
          state.inner_state, params, grown_full)
      inner_state = jax.tree.map(lambda a, b: jnp.where(is_update, a, b),
                                 reset, inner_state)
    else:
      new_updates = masks_lib.map_masked(
          lambda mk, u, p: u if mk is None else
          jnp.where(mk, u, (-p).astype(u.dtype)),
          new_masks, new_updates, params)
    new_state = SparseState(
        step=optax.safe_increment(state.step),
        masks=new_masks,
        inner_state=inner_state,
        aux=aux,
        drop_fraction=jnp.asarray(frac, jnp.float32),
        mask_churn=jnp.asarray(mask_churn, jnp.float32))
    return new_updates, new_state

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def _method_constructor(name: str, default_sparsity: Optional[float] = None):
  """Builds the optax-style constructor ``rigl_jax.<name>(inner, ...)``."""

  def constructor(inner: optax.GradientTransformation, **kwargs
                  ) -> optax.GradientTransformationExtraArgs:
    if default_sparsity is not None:
      kwargs.setdefault('sparsity', default_sparsity)
    return sparsify(inner, name, **kwargs)

  constructor.__name__ = constructor.__qualname__ = name
  constructor.__doc__ = (
      f'Sparse training with {name!r}: `sparsify(inner, {name!r}, **kwargs)`.'
      '\n\nSee `sparsify` for the keyword arguments.')
  return constructor


dense = _method_constructor('dense', default_sparsity=0.0)
static = _method_constructor('static')
set_ = _method_constructor('set')
snfs = _method_constructor('snfs')
rigl = _method_constructor('rigl')
pruning = _method_constructor('pruning')

CONFIG_FIELDS = ('method', 'sparsity', 'distribution', 'update_freq',
                 'begin_step', 'end_step', 'drop_fraction',
                 'drop_fraction_schedule', 'is_sparse', 'custom_sparsity',
                 'seed', 'erk_power_scale', 'snfs_momentum',
                 'snfs_redistribution', 'pruning_scope',
                 'pruning_initial_sparsity', 'structure')


def from_config(inner: optax.GradientTransformation, config: Any,
                *, init_masks: Any = None
                ) -> optax.GradientTransformationExtraArgs:
  """`sparsify` from an ``ml_collections.ConfigDict`` (or any mapping).

  Args:
    inner: the optax optimizer to wrap.
    config: fields named like `sparsify`'s arguments (see ``CONFIG_FIELDS``);
      ``method`` and ``sparsity`` are required, the rest default as in
      `sparsify`. ``is_sparse`` may be a regex or a list of regexes.
    init_masks: optional initial masks.

  Returns:
    The wrapped optimizer.

  Raises:
    ValueError: for unknown fields (naming the valid ones) or bad values.
  """
  fields = dict(config.to_dict() if hasattr(config, 'to_dict') else config)
  unknown = sorted(set(fields) - set(CONFIG_FIELDS))
  if unknown:
    raise ValueError(f'unknown sparsity config field(s) {unknown}; valid '
                     f'fields are {list(CONFIG_FIELDS)}')
  if 'method' not in fields:
    raise ValueError(f'the sparsity config needs a method; valid choices are '
                     f'{list(methods_lib.METHODS)}')
  method = fields.pop('method')
  if method != 'dense' and 'sparsity' not in fields:
    raise ValueError('the sparsity config needs a sparsity in [0, 1)')
  fields.setdefault('sparsity', 0.0)
  if isinstance(fields.get('is_sparse'), (list, tuple)):
    fields['is_sparse'] = list(fields['is_sparse'])
  return sparsify(inner, method, init_masks=init_masks, **fields)


def _find_states(state: Any) -> list[SparseState]:
  found = []

  def visit(x):
    if isinstance(x, SparseState):
      found.append(x)
    return x

  jax.tree.map(visit, state, is_leaf=lambda x: isinstance(x, SparseState))
  return found


def get_sparse_state(state: Any) -> SparseState:
  """Finds the `SparseState` inside an optimizer state (e.g. in a chain).

  Raises:
    ValueError: if there is none, or more than one.
  """
  found = _find_states(state)
  if len(found) != 1:
    raise ValueError(
        f'expected exactly one rigl_jax SparseState in the optimizer state, '
        f'found {len(found)}; pass the state of a sparsify(...) optimizer')
  return found[0]


def _unwrap(x: Any) -> Any:
  """Returns the array inside a wrapper such as a `flax.nnx.Variable`."""
  if x is None or isinstance(x, (jax.Array, np.ndarray)):
    return x
  if hasattr(x, 'get_value'):
    return x.get_value()
  return getattr(x, 'value', x)


def get_masks(state: Any) -> Any:
  """The current masks: a bool array per sparse leaf, None per dense leaf.

  Args:
    state: the state of a `sparsify` optimizer, or any optimizer state that
      contains one (an ``optax.chain`` state, an ``nnx.Optimizer.opt_state``).

  Returns:
    A pytree shaped like the params.
  """
  s = get_sparse_state(state)
  return jax.tree.map(
      _unwrap, s.masks,
      is_leaf=lambda x: x is None or hasattr(x, 'get_value'))


def masked_init(tx: optax.GradientTransformation,
                params: Any) -> tuple[Any, optax.OptState]:
  """Initialises ``tx`` and masks ``params`` so the model never sees a pruned
  weight, not even at step 0.

  Args:
    tx: a `sparsify` optimizer (possibly inside an ``optax.chain``).
    params: freshly initialised parameters.

  Returns:
    ``(masked_params, opt_state)``.
  """
  state = tx.init(params)
  return masks_lib.apply_masks(params, get_masks(state)), state
