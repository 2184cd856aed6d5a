"""Property-based tests (hypothesis) of the sparse transforms' invariants.

Random parameter pytrees (nested dicts of 2-D dense kernels, 4-D conv kernels
and 1-D bias/scale leaves), sparsities, distributions, drop fractions and
schedules, methods and inner optimizers are driven for a few jitted steps
with random gradients (small ``update_freq``, so that masks change), through
the single `lax.cond` program or the two programs picked on the host
(``update(..., mask_update=...)``). After init and after every step `_drive`
checks what `rigl_jax.sparsify` promises:

- masks are bool, shaped like their params, None for dense leaves;
- each sparse leaf keeps exactly the nnz it was given (dynamic methods; SNFS
  with redistribution: the total) or the nnz of the cubic schedule (pruning);
  masks change only on update steps, and by at most the drop fraction;
- inactive weights are exactly 0, and no NaN appears in params or state;
- grown connections start at exactly 0, weights and every inner-optimizer
  state leaf that mirrors the params;
- dense leaves are updated exactly as the inner optimizer alone would.

Mask updates on exact ties (all-zero gradients, all-equal weights) must give
the same masks from the cond program, the host-picked programs and no jit,
with RigL's lowest-index-first tie break; huge and tiny finite values must not
give NaN or lose nnz.

Every example compiles its step, so examples are few and shapes small (about
20 s in all on two CPU cores); ``RIGL_JAX_PROPERTY_SCALE=10`` searches longer.
"""

import functools
import math
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from hypothesis import HealthCheck
from hypothesis import Phase
from hypothesis import assume
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st

import rigl_jax
from rigl_jax import distributions
from rigl_jax.methods.snfs import redistribute_counts

settings.register_profile(
    'rigl_jax_properties', deadline=None, print_blob=True,
    # Every example compiles: skip the costly 'explain' phase.
    phases=(Phase.explicit, Phase.reuse, Phase.generate, Phase.shrink),
    suppress_health_check=[HealthCheck.too_slow,
                           HealthCheck.filter_too_much,
                           HealthCheck.data_too_large])
_PROFILE = settings.get_profile('rigl_jax_properties')
_SCALE = float(os.environ.get('RIGL_JAX_PROPERTY_SCALE', '1'))


def _examples(n: int) -> int:
  return max(1, int(round(n * _SCALE)))


# Compilation dominates the runtime (every example compiles a step): XLA's
# cheapest backend optimisation halves it and leaves the semantics alone.
_FAST_COMPILE = {'xla_backend_optimization_level': 0,
                 'xla_llvm_disable_expensive_passes': True}


METHODS = ('dense', 'static', 'set', 'snfs', 'rigl', 'pruning')
DYNAMIC = ('set', 'snfs', 'rigl')
SKIPS_WEIGHT_UPDATE = ('rigl',)

# name -> (constructor, number of inner-state subtrees that mirror params).
INNERS = {
    'sgd': (lambda: optax.sgd(0.1), 0),
    'momentum': (lambda: optax.sgd(0.05, momentum=0.9), 1),
    'nesterov': (lambda: optax.sgd(0.05, momentum=0.9, nesterov=True), 1),
    'adam': (lambda: optax.adam(1e-2), 2),
    'adamw': (lambda: optax.adamw(1e-2, weight_decay=1e-2), 2),
    'clip_adam': (lambda: optax.chain(optax.clip_by_global_norm(1.0),
                                      optax.adam(1e-2)), 2),
    'rmsprop': (lambda: optax.rmsprop(1e-2, momentum=0.9), 2),
}

# --------------------------------------------------------------------------
# Strategies.


@st.composite
def shape_trees(draw):
  """Nested dicts of leaf shapes: dense/conv layers (kernel + optional bias),
  norm scales, optionally grouped in a block; one or two kernels (each
  sparse leaf adds about a second of compilation)."""
  layers = {}
  n_layers = draw(st.integers(1, 3))
  n_kernels = 0
  for i in range(n_layers):
    kind = draw(st.sampled_from(['dense', 'conv', 'norm']))
    if n_kernels == 2:
      kind = 'norm'
    n_kernels += kind != 'norm'
    if kind == 'dense':
      a, b = draw(st.integers(1, 8)), draw(st.integers(1, 8))
      layer = {'kernel': (a, b)}
      if draw(st.booleans()):
        layer['bias'] = (b,)
      layers[f'Dense_{i}'] = layer
    elif kind == 'conv':
      k = draw(st.sampled_from([1, 2, 3]))
      ci, co = draw(st.integers(1, 3)), draw(st.integers(1, 4))
      layer = {'kernel': (k, k, ci, co)}
      if draw(st.booleans()):
        layer['bias'] = (co,)
      layers[f'Conv_{i}'] = layer
    else:
      layers[f'LayerNorm_{i}'] = {'scale': (draw(st.integers(1, 6)),)}
  if not any('kernel' in layer for layer in layers.values()):
    layers['Dense_9'] = {'kernel': (draw(st.integers(2, 6)), 3), 'bias': (3,)}
  names = sorted(layers)
  if len(names) > 1 and draw(st.booleans()):  # nest the last ones in a block
    cut = draw(st.integers(1, len(names) - 1))
    layers['block'] = {n: layers.pop(n) for n in names[cut:]}
  return layers


@st.composite
def configs(draw):
  """Keyword arguments of `sparsify` (plus 'inner' and 'n_steps')."""
  method = draw(st.sampled_from(METHODS))
  begin = draw(st.integers(0, 2))
  cfg = dict(
      method=method,
      inner=draw(st.sampled_from(sorted(INNERS))),
      sparsity=draw(st.sampled_from([0.0, 0.5, 0.8, 0.9]) |
                    st.floats(0.0, 0.9)),
      distribution=draw(st.sampled_from(distributions.DISTRIBUTIONS)),
      update_freq=draw(st.integers(1, 3)),
      begin_step=begin,
      end_step=begin + draw(st.integers(1, 8)),
      drop_fraction=draw(st.sampled_from([0.0, 0.3, 0.5, 1.0]) |
                         st.floats(0.0, 1.0)),
      drop_fraction_schedule=draw(st.sampled_from(
          ['cosine', 'constant', 'exponential', 'exponential_3'])),
      seed=draw(st.integers(0, 3)),
      n_steps=draw(st.integers(3, 6)),
      # Steps from one lax.cond program, or from the plain and mask-update
      # programs picked on the host (`update(..., mask_update=...)`).
      host_schedule=draw(st.booleans()),
  )
  if method in DYNAMIC:
    # The reference's 1e-5, none, and noise that reorders everything.
    cfg['noise_std'] = draw(st.sampled_from([1e-5, 0.0, 0.1]))
  if method == 'snfs':
    cfg['snfs_momentum'] = draw(st.sampled_from([0.0, 0.5, 0.9]))
    cfg['snfs_redistribution'] = draw(st.booleans())
  if method == 'pruning':
    cfg['pruning_scope'] = draw(st.sampled_from(['layer', 'global']))
    cfg['pruning_initial_sparsity'] = draw(st.sampled_from([0.0, 0.3]))
  return cfg


# How values are drawn: 'normal', or 'ties' (few exact levels, many zeros).
VALUE_MODES = ('normal', 'ties')
GRAD_MODES = ('normal', 'ties', 'zeros')


def _values(shapes, mode, rng):
  def leaf(shape):
    if mode == 'normal':
      x = rng.standard_normal(shape)
    elif mode == 'ties':
      x = rng.integers(-2, 3, shape) * 0.5
    else:
      x = np.zeros(shape)
    return jnp.asarray(x, jnp.float32)
  return jax.tree.map(leaf, shapes, is_leaf=lambda x: isinstance(x, tuple))


# --------------------------------------------------------------------------
# Helpers.


def _is_none(x):
  return x is None


def _leaves(tree):
  """Leaves with None kept (for mask trees)."""
  return jax.tree.leaves(tree, is_leaf=_is_none)


def _build(cfg):
  kwargs = {k: v for k, v in cfg.items()
            if k not in ('inner', 'n_steps', 'host_schedule')}
  method = kwargs.pop('method')
  inner = INNERS[cfg['inner']][0]()
  return rigl_jax.sparsify(inner, method, **kwargs), inner


@functools.lru_cache(maxsize=64)
def _compiled(frozen_cfg):
  """(tx, inner, init, step) per config; jit caches per shape signature.

  ``init`` is `rigl_jax.masked_init` jitted: eagerly it compiles its random
  draws and selections again for every new shape, which costs more.
  """
  tx, inner = _build(dict(frozen_cfg))

  @functools.partial(jax.jit, compiler_options=_FAST_COMPILE)
  def init(params):
    return rigl_jax.masked_init(tx, params)

  @functools.partial(jax.jit, static_argnames='mask_update',
                     compiler_options=_FAST_COMPILE)
  def step(params, state, ref_state, grads, mask_update=None):
    masks = rigl_jax.get_masks(state)
    updates, new_state = tx.update(grads, state, params,
                                   mask_update=mask_update)
    # The inner optimizer alone, on the gradients of the active weights.
    ref_updates, new_ref_state = inner.update(
        rigl_jax.apply_masks(grads, masks), ref_state, params)
    return (optax.apply_updates(params, updates), new_state,
            optax.apply_updates(params, ref_updates), new_ref_state)

  return tx, inner, init, step


def _freeze(cfg):
  """The cache key of a config: what builds the transform."""
  return tuple(sorted((k, v) for k, v in cfg.items()
                      if k not in ('n_steps', 'host_schedule')))


def _mirrors(tree, params):
  """Subtrees of ``tree`` with the structure and leaf shapes of ``params``."""
  p_def = jax.tree.structure(params)
  shapes = [np.shape(x) for x in jax.tree.leaves(params)]

  def is_mirror(x):
    try:
      return (jax.tree.structure(x) == p_def and
              [np.shape(y) for y in jax.tree.leaves(x)] == shapes)
    except Exception:  # pylint: disable=broad-except
      return False

  found = []

  def visit(x):
    if is_mirror(x):
      found.append(x)
    return x

  jax.tree.map(visit, tree, is_leaf=is_mirror)
  return found


def _is_update(t, cfg):
  """Python mirror of `schedules.is_update_step` for the config."""
  begin, end, freq = cfg['begin_step'], cfg['end_step'], cfg['update_freq']
  on = begin <= t < end and (t - begin) % freq == 0
  if cfg['method'] == 'pruning':
    return on or t == end
  return on and cfg['method'] in DYNAMIC


def _drop_fraction(t, cfg):
  """Float64 drop fraction of the schedule at step t."""
  alpha, begin, end = (cfg['drop_fraction'], cfg['begin_step'],
                       cfg['end_step'])
  name = cfg['drop_fraction_schedule']
  if name == 'constant':
    return alpha
  if name == 'cosine':
    return alpha * 0.5 * (1.0 + math.cos(math.pi * min(max(t / end, 0), 1)))
  k = float(name.split('_')[1]) if '_' in name else 1.0
  return alpha * (1.0 - min(max((t - begin) / (end - begin), 0.0), 1.0))**k


def _pruning_target(u, final, cfg):
  """The cubic schedule at step u; s_i is capped at the final sparsity."""
  frac = min(max((u - cfg['begin_step']) /
                 (cfg['end_step'] - cfg['begin_step']), 0.0), 1.0)
  initial = min(cfg['pruning_initial_sparsity'], final)
  return final + (initial - final) * (1.0 - frac)**3


def _floor_counts(x):
  """Counts floor(x) may give when x was computed in float32."""
  return {math.floor(x - 2e-3), math.floor(x + 2e-3)}


def _assert_no_nan(tree, what):
  for x in jax.tree.leaves(tree):
    x = np.asarray(x)
    if np.issubdtype(x.dtype, np.floating):
      assert not np.isnan(x).any(), f'NaN in {what}'


def _assert_mask_basics(params, masks, flags):
  for p, m, f in zip(jax.tree.leaves(params), _leaves(masks),
                     jax.tree.leaves(flags)):
    if not f:
      assert m is None
      continue
    m = np.asarray(m)
    assert m.dtype == np.bool_ and m.shape == np.shape(p)
    # Inactive weights are exactly zero.
    assert (np.asarray(p)[~m] == 0.0).all()


# --------------------------------------------------------------------------
# The invariants of every step.


def _nnz(masks):
  return [None if m is None else int(np.sum(m)) for m in _leaves(masks)]


def _drive(cfg, params, grads_list, *, jit=True, init=None):
  """Runs ``cfg`` over ``grads_list``, checking every invariant after init
  and after every step.

  Args:
    cfg: a dict as drawn by `configs`.
    params: the initial (unmasked) params.
    grads_list: one gradient pytree per step.
    jit: False runs the steps under `jax.disable_jit`.
    init: optional ``(masked_params, state)`` to start from instead of
      `rigl_jax.masked_init`.

  Returns:
    ``[(params, state)]`` after init and after each step.
  """
  _, inner, init_fn, step = _compiled(_freeze(cfg))
  method = cfg['method']
  finals = jax.tree.leaves(rigl_jax.sparsity_distribution(
      params, cfg['sparsity'], cfg['distribution']))
  params, state = init_fn(params) if init is None else init
  ref_state = inner.init(params)
  p_leaves = jax.tree.leaves(params)
  # Kernels (ndim >= 2) are sparse, bias and scale vectors dense.
  flags = [method != 'dense' and np.ndim(p) >= 2 for p in p_leaves]
  sparse = jax.tree.unflatten(jax.tree.structure(params), flags)
  sizes = [int(np.size(p)) for p in p_leaves]
  given_nnz = [
      None if not f else n if method == 'pruning' else
      n - distributions.num_zeros(np.shape(p), s)
      for p, n, s, f in zip(p_leaves, sizes, finals, flags)]
  masks = rigl_jax.get_masks(state)
  _assert_mask_basics(params, masks, sparse)
  assert _nnz(masks) == given_nnz
  n_mirrors = INNERS[cfg['inner']][1]
  out, last_update = [(params, state)], None

  for t, grads in enumerate(grads_list):
    update = _is_update(t, cfg)
    with jax.disable_jit(not jit):
      new_params, new_state, ref_params, new_ref_state = step(
          params, state, ref_state, grads,
          mask_update=update if cfg.get('host_schedule') else None)
    new_masks = rigl_jax.get_masks(new_state)
    last_update = t if update else last_update
    assert int(new_state.step) == t + 1
    _assert_mask_basics(new_params, new_masks, sparse)
    _assert_no_nan((new_params, new_state), f'params/state after step {t}')

    old_m = [None if m is None else np.asarray(m) for m in _leaves(masks)]
    new_m = [None if m is None else np.asarray(m) for m in _leaves(new_masks)]
    nnz = _nnz(new_masks)
    if not update:
      for a, b in zip(old_m, new_m):
        assert a is None or (a == b).all(), f'mask changed at step {t}'

    # nnz: as given (dynamic, static), or as scheduled (pruning).
    if method == 'pruning':
      for a, b in zip(old_m, new_m):
        assert a is None or not (b & ~a).any(), 'pruning revived a weight'
      if last_update is None:
        assert nnz == given_nnz
      elif cfg['pruning_scope'] == 'layer':
        for n, size, s, f in zip(nnz, sizes, finals, flags):
          if f:
            zeros = _floor_counts(_pruning_target(last_update, s, cfg) * size)
            assert size - n in zeros, (t, size, n, zeros)
      else:
        total = sum(s for s, f in zip(sizes, flags) if f)
        zeros = _floor_counts(
            _pruning_target(last_update, cfg['sparsity'], cfg) * total)
        assert total - sum(filter(None, nnz)) in zeros, (t, nnz, zeros)
    elif method == 'snfs' and cfg.get('snfs_redistribution'):
      assert sum(filter(None, nnz)) == sum(filter(None, given_nnz)), nnz
      assert all(n is None or n <= s for n, s in zip(nnz, sizes))
    else:
      assert nnz == given_nnz, (t, nnz, given_nnz)

    # Dynamic methods replace at most floor(drop_fraction * nnz) per leaf.
    if update and method in DYNAMIC:
      frac = _drop_fraction(t, cfg)
      np.testing.assert_allclose(float(new_state.drop_fraction), frac,
                                 rtol=1e-5, atol=1e-6)
      for a, b in zip(old_m, new_m):
        if a is not None:
          assert int((a & ~b).sum()) <= max(_floor_counts(frac * a.sum()))

    # Grown connections start at exactly 0, with their inner state reset.
    mirrors = _mirrors(new_state.inner_state, params)
    assert len(mirrors) == n_mirrors
    for i, (a, b) in enumerate(zip(old_m, new_m)):
      if a is None:
        continue
      grown = b & ~a
      assert method in DYNAMIC or not grown.any()
      assert (np.asarray(jax.tree.leaves(new_params)[i])[grown] == 0).all()
      for mirror in mirrors:
        assert (np.asarray(jax.tree.leaves(mirror)[i])[grown] == 0).all()

    # Dense leaves: the inner optimizer's update (RigL's mask updates
    # replace the weight update, and the inner state stays put; SET and SNFS
    # apply it first, as the reference code does). To the last bit but one:
    # the two computations are fused differently in the step's program, and
    # XLA:CPU may round one of them an ulp apart (hypothesis found RMSProp
    # on a dense 5x5 kernel: 0.129348 vs 0.129347 after 3 steps).
    skipped = update and method in SKIPS_WEIGHT_UPDATE
    for i, f in enumerate(flags):
      if not f:
        np.testing.assert_allclose(
            np.asarray(jax.tree.leaves(new_params)[i]),
            np.asarray(jax.tree.leaves(params if skipped else ref_params)[i]),
            rtol=1e-6, atol=1e-7)
    # A skipped step holds the parameter-shaped inner state (moments) back;
    # counters (Adam's count) advance on every step.
    ref_state = new_ref_state if not skipped else jax.tree.map(
        lambda old, new: new if jnp.issubdtype(new.dtype, jnp.integer)
        else old, ref_state, new_ref_state)
    params, state, masks = new_params, new_state, new_masks
    out.append((params, state))
  return out


@settings(_PROFILE, max_examples=_examples(10))
@given(cfg=configs(), shapes=shape_trees(),
       param_mode=st.sampled_from(VALUE_MODES),
       grad_mode=st.sampled_from(GRAD_MODES),
       data_seed=st.integers(0, 2**16))
def test_invariants_hold_after_every_step(cfg, shapes, param_mode, grad_mode,
                                          data_seed):
  rng = np.random.default_rng(data_seed)
  params = _values(shapes, param_mode, rng)
  try:
    rigl_jax.sparsity_distribution(params, cfg['sparsity'],
                                   cfg['distribution'])
  except ValueError:  # ERK/ER cannot give every tiny layer one weight
    assume(False)
  grads = [_values(shapes, grad_mode, rng) for _ in range(cfg['n_steps'])]
  _drive(cfg, params, grads)


# --------------------------------------------------------------------------
# Exact ties and extreme values in the mask update.

# One shape tree and a few configs, so that these compile once per method
# (SET draws its grow scores at random: the main test covers it).
_FIXED_SHAPES = {
    'Conv_0': {'kernel': (2, 2, 2, 3), 'bias': (3,)},
    'block': {'Dense_0': {'kernel': (6, 4)},
              'LayerNorm_0': {'scale': (4,)}},
}
# No drop-score noise: ties are then broken by position, as the oracle does.
_FIXED_METHODS = {
    'rigl': dict(method='rigl', noise_std=0.0),
    'snfs_redistribution': dict(method='snfs', snfs_momentum=0.5,
                                snfs_redistribution=True, noise_std=0.0),
    'pruning_global': dict(method='pruning', pruning_scope='global',
                           pruning_initial_sparsity=0.0),
}
_FIXED_STEPS = 5


def _fixed_cfg(name):
  # Mask updates at steps 1 and 3, weight updates at 0, 2 and 4, so that
  # connections dropped at 1 may come back at 3 with stale Adam moments;
  # the global-norm clip couples the dense leaves to the masked gradients.
  return dict(_FIXED_METHODS[name], inner='clip_adam', sparsity=0.5,
              distribution='uniform', update_freq=2, begin_step=1,
              end_step=6, drop_fraction=0.5, drop_fraction_schedule='constant',
              seed=0, n_steps=_FIXED_STEPS)


def _drive_fixed(name, params, grads_list, jit=True, host_schedule=False):
  cfg = dict(_fixed_cfg(name), host_schedule=host_schedule)
  init = _compiled(_freeze(cfg))[2](params)  # the same masks for every run
  return _drive(cfg, params, grads_list, jit=jit, init=init)


def _tree(shapes, fn):
  return jax.tree.map(lambda s: jnp.asarray(fn(s), jnp.float32), shapes,
                      is_leaf=lambda x: isinstance(x, tuple))


def _stable_top(scores, k, valid):
  """The k largest valid scores, ties to the lower flat index (numpy)."""
  flat, ok = scores.reshape(-1), valid.reshape(-1)
  order = [i for i in np.lexsort((np.arange(flat.size), -flat)) if ok[i]]
  out = np.zeros(flat.size, bool)
  out[order[:k]] = True
  return out.reshape(scores.shape)


def _rigl_reference(w, g, mask, drop_fraction):
  """Algorithm 1 of RigL for one leaf: drop the smallest |w|, grow the
  largest |g| among the positions not kept."""
  nnz = int(mask.sum())
  n_drop = math.floor(drop_fraction * nnz)
  kept = _stable_top(np.abs(w), nnz - n_drop, mask)
  return kept | _stable_top(np.abs(g), n_drop, ~kept)


# All-equal, all-zero, or two exact levels.
TIE_PATTERNS = {
    'equal': lambda rng, s: np.full(s, 0.25),
    'zeros': lambda rng, s: np.zeros(s),
    'two_levels': lambda rng, s: rng.integers(0, 2, s) * 0.5 - 0.25,
}


@settings(_PROFILE, max_examples=_examples(4))
@given(name=st.sampled_from(sorted(_FIXED_METHODS)),
       weight_pattern=st.sampled_from(sorted(TIE_PATTERNS)),
       grad_pattern=st.sampled_from(sorted(TIE_PATTERNS)),
       data_seed=st.integers(0, 2**16))
def test_ties_are_broken_deterministically(name, weight_pattern,
                                           grad_pattern, data_seed):
  rng = np.random.default_rng(data_seed)
  params = _tree(_FIXED_SHAPES,
                 functools.partial(TIE_PATTERNS[weight_pattern], rng))
  grads = [_tree(_FIXED_SHAPES,
                 functools.partial(TIE_PATTERNS[grad_pattern], rng))
           for _ in range(_FIXED_STEPS)]
  # The lax.cond program, the two programs picked on the host, and no jit
  # (two steps only: it is slow); `_drive` checks every invariant of each
  # (exact nnz included).
  runs = [_drive_fixed(name, params, grads),
          _drive_fixed(name, params, grads, host_schedule=True),
          _drive_fixed(name, params, grads[:2], jit=False)]
  for t, (_, state) in enumerate(runs[0]):
    masks = _leaves(rigl_jax.get_masks(state))
    for run in runs[1:]:
      if t < len(run):
        for a, b in zip(masks, _leaves(rigl_jax.get_masks(run[t][1]))):
          assert (a is None) == (b is None)
          if a is not None:
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  if name == 'rigl':  # the tie break of the reference: lower index first
    for t in (1, 3):  # the mask-update steps
      (w, before), (_, after) = runs[0][t], runs[0][t + 1]
      for w, g, a, b in zip(jax.tree.leaves(w), jax.tree.leaves(grads[t]),
                            _leaves(rigl_jax.get_masks(before)),
                            _leaves(rigl_jax.get_masks(after))):
        if a is not None:
          np.testing.assert_array_equal(
              np.asarray(b), _rigl_reference(np.asarray(w), np.asarray(g),
                                             np.asarray(a), 0.5))


_EXTREMES = np.array([3e38, -3e38, 1e38, -1e-45, 1e-45, 1e-38, -1e-30, 0.0,
                      1.0, -2.5, 7e37], np.float32)


@settings(_PROFILE, max_examples=_examples(8))
@given(name=st.sampled_from(sorted(_FIXED_METHODS)),
       data_seed=st.integers(0, 2**16))
def test_extreme_finite_values_give_no_nan(name, data_seed):
  rng = np.random.default_rng(data_seed)
  extreme = lambda s: rng.choice(_EXTREMES, s)  # noqa: E731
  # `_drive` checks no NaN, exact nnz and masking after every step.
  _drive_fixed(name, _tree(_FIXED_SHAPES, extreme),
               [_tree(_FIXED_SHAPES, extreme) for _ in range(_FIXED_STEPS)])


def test_snfs_redistribution_survives_overflowing_momentum():
  """Regression: the layers' summed momentum overflowed to inf, the shares
  became NaN and SNFS grew nothing, shrinking the network at every update."""
  huge = [_tree(_FIXED_SHAPES, lambda s: np.full(s, 3e38))] * _FIXED_STEPS
  _drive_fixed('snfs_redistribution', _tree(_FIXED_SHAPES, np.ones), huge)


_redistribute_counts = jax.jit(redistribute_counts,
                               compiler_options=_FAST_COMPILE)


@pytest.mark.parametrize('weights', [
    [np.inf, 1.0, np.inf], [np.nan, 1.0, 2.0], [3e38, 3e38, 3e38],
    [0.0, 0.0, 0.0], [1e-45, 0.0, 1e-45]])
def test_redistribute_counts_is_exact_for_any_weights(weights):
  capacity = np.array([20, 5, 20], np.int32)
  for total in (0, 7, 30, 45, 60):
    counts = np.asarray(_redistribute_counts(
        jnp.int32(total), jnp.asarray(weights, jnp.float32),
        jnp.asarray(capacity)))
    assert counts.sum() == min(total, capacity.sum())
    assert (counts >= 0).all() and (counts <= capacity).all()
