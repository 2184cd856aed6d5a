"""The optax wrapper: sparse training around any inner optax optimizer.

``sparsify(inner, method, ...)`` returns an optax transformation whose state
holds the masks, the inner optimizer's state and the method's own state. Its
``update`` is Algorithm 1 of Evci et al. (2020) for any method:

1. the inner optimizer sees the gradients of the active weights only;
2. on a mask-update step (``tx.schedule``) the method's rule changes the
   masks, under `jax.lax.cond`: RigL, SET and SNFS drop the
   ``floor(drop_fraction(t) * nnz)`` smallest active weights of each layer
   and grow as many (and skip that step's weight update), pruning removes
   weights on its cubic schedule;
3. the updates leave every masked weight at exactly zero; where a mask
   changed, the parameter-shaped optimizer state (momentum, Adam moments,
   ...) restarts as the optimizer would start a zero weight, while counters,
   schedules and injected hyperparameters advance on every step.

The gradients passed to ``update`` must be those of the loss w.r.t. the
(masked) parameters, i.e. what `jax.grad` gives when the model uses the
stored params directly; they are dense, which is what RigL grows by.

Where it goes in a chain: ``sparsify`` must be the last transformation, the
one whose updates `optax.apply_updates` adds to the params (it zeroes dropped
weights with an update of ``-p``). Wrap everything else inside it:
``sparsify(optax.chain(optax.clip(1.0), optax.scale_by_adam(),
optax.scale(-lr)), ...)``. Transformations before it in a chain (gradient
clipping) are fine. A transformation after it that changes its updates makes
masked weights nonzero; the next mask update detects that and stops the
program with an error that says so.
"""

from __future__ import annotations

import contextlib
import contextvars
import difflib
import functools
import inspect
from collections.abc import Mapping
from typing import Any, NamedTuple, Optional, Union

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax import custom_batching

from rigl_jax import cpu_allocator
from rigl_jax import distributions
from rigl_jax import layers as layers_lib
from rigl_jax import mask_update as mask_update_lib
from rigl_jax import masks as masks_lib
from rigl_jax import methods as methods_lib
from rigl_jax import paths as paths_lib
from rigl_jax import schedules
from rigl_jax import structure as structure_lib


class SparseState(NamedTuple):
  """State of `sparsify`.

  Attributes:
    step: number of ``update`` calls so far (int32).
    masks: a bool array per sparse leaf, None per dense leaf.
    inner_state: the wrapped optimizer's state (`optax.tree_utils.tree_get`
      reaches into it, e.g. an ``inject_hyperparams`` learning rate).
    aux: the method's own state (SNFS: EMA of the dense gradients).
    drop_fraction: the drop fraction used by the last mask update (for
      pruning: the fraction of active weights it removed).
    mask_churn: fraction of the active connections that the last mask update
      removed (and, for dynamic methods, replaced).
    key: the PRNG key of random mask choices (SET's growth); from
      ``masked_init(..., key=)`` or ``seed``.
  """
  step: jax.Array
  masks: Any
  inner_state: optax.OptState
  aux: Any
  drop_fraction: jax.Array
  mask_churn: jax.Array
  key: jax.Array


class DenseWeights(NamedTuple):
  """``SparseState.aux`` of a method that keeps dense weights (Top-KAST).

  Attributes:
    weights: the dense weights θ of the sparse leaves (None elsewhere); the
      parameters the model sees are θ on the forward sets (the masks).
    backward: the backward sets, a bool array per sparse leaf.
  """
  weights: Any
  backward: Any


class SparseTransformation(optax.GradientTransformationExtraArgs):
  """What `sparsify` returns: an optax transformation (``init``, ``update``)
  that also carries its ``method`` (a `rigl_jax.methods.Method`) and its
  ``schedule`` (a `rigl_jax.schedules.MaskSchedule`: when masks change,
  for a training loop that runs a mask-update program only then)."""
  method: methods_lib.Method
  schedule: schedules.MaskSchedule
  # (params, key=None) -> (masked params, state), in one program; what
  # `rigl_jax.masked_init` calls.
  masked_init: Any


# --- One-time programs -------------------------------------------------------

# The initialisation program has about three small elementwise kernels per
# leaf (the leaf's mask, its masked params, the inner state), and compiling
# them is most of `masked_init`'s time on a large tree. On XLA:CPU, -O1
# compiles them ~20% faster and runs the program as fast. (XLA:CPU's older
# loop emitters, `xla_cpu_use_fusion_emitters=False`, compile faster still
# but select wrong masks on tied scores: tests/core/test_properties.py's
# tie test fails under them.) Other backends compile with their defaults.
_CPU_INIT_OPTIONS = {'xla_backend_optimization_level': 1}


def _is_eager(args: Any) -> bool:
  """Whether ``args`` are concrete arrays and numbers (no tracer, nothing
  `jax.jit` cannot take), i.e. a call outside jit, vmap and grad."""
  leaves = jax.tree.leaves(args)
  return bool(leaves) and all(
      isinstance(x, (jax.Array, np.ndarray, np.generic, int, float, bool))
      and not isinstance(x, jax.core.Tracer) for x in leaves)


def _one_time_program(fn):
  """``jax.jit(fn)``, compiled for fast compilation on CPU.

  The backend is looked up at the first call, not here: ``sparsify`` may run
  before ``jax.distributed.initialize``, which must precede backend setup.
  """
  jitted = {}
  plain = jax.jit(fn)

  def call(*args):
    if not _is_eager(args):
      return plain(*args)  # inside the caller's jit: its options apply
    backend = jax.default_backend()
    if backend not in jitted:
      jitted[backend] = jax.jit(
          fn, compiler_options=_CPU_INIT_OPTIONS if backend == 'cpu' else None)
    try:
      return jitted[backend](*args)
    except jax.errors.JaxRuntimeError as e:
      if 'compile option' not in str(e):
        raise
      # An XLA without these options: compile with its defaults.
      jitted[backend] = plain
      return plain(*args)

  return call


def _one_cpu_device(params: Any, key: Any) -> Optional[jax.Device]:
  """The CPU device that holds every array of ``params`` and ``key``, or
  None (tracers, several devices, shardings, another platform)."""
  devices = set()
  for x in jax.tree.leaves((params, key)):
    if isinstance(x, jax.core.Tracer):
      return None
    if isinstance(x, jax.Array):
      if not isinstance(x.sharding, jax.sharding.SingleDeviceSharding):
        return None
      devices |= x.devices()
  if len(devices) > 1:
    return None
  device = devices.pop() if devices else jax.devices()[0]
  return device if device.platform == 'cpu' else None


def _committed_like(params: Any, out: Any) -> Any:
  """``out`` committed to the device of ``params`` if ``params`` are.

  A jitted program's outputs are committed to a device only when one of the
  inputs it reads is; the init programs read no parameter values for most
  inner optimizers (their state is zeros shaped like the params). A jitted
  step given committed params and an uncommitted state returns a committed
  state, and compiles again at its second call; committing the state as the
  params are makes the user's step compile once.
  """
  devices = set()
  for x in jax.tree.leaves(params):
    if isinstance(x, jax.core.Tracer) or not isinstance(x, jax.Array):
      continue
    if not (x.committed and isinstance(x.sharding,
                                       jax.sharding.SingleDeviceSharding)):
      return out
    devices |= x.devices()
  if len(devices) != 1:
    return out
  device = devices.pop()
  return jax.tree.map(
      lambda x: jax.device_put(x, device) if (
          isinstance(x, jax.Array) and not isinstance(x, jax.core.Tracer)
          and not x.committed) else x, out)


# --- Keys for ensembles -----------------------------------------------------

_INIT_KEY: contextvars.ContextVar = contextvars.ContextVar('rigl_jax_init_key',
                                                          default=None)


@contextlib.contextmanager
def init_key(key: jax.Array):
  """Within this context, `sparsify` optimizers initialise from ``key``.

  For code that calls ``tx.init`` itself (``nnx.Optimizer``,
  ``TrainState.create``); `masked_init` takes ``key=`` directly.
  """
  token = _INIT_KEY.set(key)
  try:
    yield
  finally:
    _INIT_KEY.reset(token)


@custom_batching.custom_vmap
def _any_member(x: jax.Array) -> jax.Array:
  """``x`` itself; under `jax.vmap`, True if any member's ``x`` is.

  Keeps the mask update a `lax.cond` in a vmapped step (an ensemble whose
  members share the schedule): a batched predicate would turn the cond into
  a select that runs the mask update on every step.
  """
  return x


@_any_member.def_vmap
def _any_member_rule(axis_size, in_batched, x):
  del axis_size
  if in_batched[0]:
    x = jnp.any(x, axis=0)
  return _any_member(x), False


# --- Leaves and layers --------------------------------------------------------


class _Leaf(NamedTuple):
  """A sparse leaf: where it is, how it splits into layers, its sparsity."""
  index: int
  path: str
  axis: Optional[int]
  layer_shape: tuple[int, ...]
  ids: np.ndarray
  sparsity: float
  fixed: bool
  init_sparsity: Optional[float] = None  # a method's sparse start (GraNet)


def _masked_list(masks: list[Any], values: list[Any]) -> list[Any]:
  """``values`` with zeros where the mask is False; a None mask (dense
  leaf) or value passes through."""
  return [v if mk is None or v is None else
          jnp.where(mk, v, jnp.zeros_like(v))
          for mk, v in zip(masks, values)]


def _fused_state(inner_state: Any, step: jax.Array) -> Any:
  """``inner_state`` unchanged, passed through a select that never fires.

  The plain step masks the gradients before the inner optimizer, which
  reads them twice (momentum, then Nesterov's lookahead; Adam's two
  moments). XLA:CPU then writes the masked gradients out and reads them
  back, one extra pass over every sparse weight per step; when the inner
  state leaves through a select (as it does in the mask-update step, where
  grown positions are reset) it fuses the masking into both readers
  instead. ``step < 0`` never holds (the counter saturates at its maximum)
  but is unknown to the compiler. Measured on the benchmark MLP
  (`benchmarks/sparse_step.py`, 2026-12-03): the static step 1.032x -> 1.000x
  the dense step.
  """
  never = step < 0
  return jax.tree.map(
      lambda x: jnp.where(never, jnp.zeros_like(x), x), inner_state)


def _is_transformation(x: Any) -> bool:
  return (isinstance(x, optax.GradientTransformation) or
          (not callable(x) and hasattr(x, 'init') and hasattr(x, 'update')))


def _check_inner(inner: Any) -> optax.GradientTransformationExtraArgs:
  if _is_transformation(inner):
    return optax.with_extra_args_support(inner)
  if callable(inner):
    name = getattr(inner, '__qualname__', repr(inner))
    module = getattr(inner, '__module__', '') or ''
    if module.startswith('optax'):
      name = 'optax.' + name
    raise ValueError(
        f'inner must be an optax GradientTransformation; got {name} itself, '
        f'not called. Call it with its hyperparameters, e.g. '
        f'sparsify({name}(learning_rate), ...)')
  raise ValueError(f'inner must be an optax GradientTransformation (such as '
                   f'optax.sgd(0.1)); got {type(inner).__name__}')


def _check_schedule_args(method: methods_lib.Method, update_freq: Any,
                         begin_step: Any, end_step: Any,
                         drop_fraction: float) -> None:
  if not isinstance(update_freq, (int, np.integer)) or update_freq < 1:
    raise ValueError(f'update_freq must be an integer >= 1; got '
                     f'{update_freq!r}')
  if not isinstance(begin_step, (int, np.integer)) or begin_step < 0:
    raise ValueError(f'begin_step must be an integer >= 0; got '
                     f'{begin_step!r}')
  if method.dynamic and not method.single_update:
    if end_step is None:
      raise ValueError('end_step is required for dynamic sparse training and '
                       'pruning: the last step at which masks change')
    if not isinstance(end_step, (int, np.integer)) or end_step <= begin_step:
      raise ValueError(f'end_step must be an integer > begin_step '
                       f'({begin_step}); got {end_step!r}')
  if not 0.0 <= float(drop_fraction) <= 1.0:
    raise ValueError(f'drop_fraction must be in [0, 1]; got {drop_fraction!r}')


def _first_mismatch(want: list[str], got: list[str]) -> str:
  for i, (a, b) in enumerate(zip(want, got)):
    if a != b:
      return (f'leaf {i} is {b!r} where the optimizer was initialised with '
              f'{a!r}')
  if len(got) > len(want):
    return f'{got[len(want)]!r} is not in the params it was initialised with'
  return f'{want[len(got)]!r} is missing'


def _aligned(name: str, tree: Any, want: list[str]
             ) -> tuple[list[Any], Any]:
  """``tree``'s leaves (None as a leaf) and treedef, checked against the
  leaf paths the state was initialised with."""
  flat, treedef = paths_lib.flatten(tree)
  got = [p for p, _ in flat]
  if got != want:
    raise ValueError(
        f'{name} do not match the params this sparsify optimizer was '
        f'initialised with: {_first_mismatch(want, got)}')
  return [x for _, x in flat], treedef


def _report_leak(counts, step, *, names: tuple[str, ...]) -> np.ndarray:
  """Host callback: stops the program if masked weights are nonzero.

  Returns zeros shaped like ``step`` (one per vmapped member), which the
  program then reads, so that the call is not dropped as unused.
  """
  counts = np.asarray(counts).reshape(-1, 2, len(names)).max(axis=0)
  step = int(np.max(step))
  bad = [(n, int(c)) for n, c in zip(names, counts[0]) if c > 0]
  nonfinite = [(n, int(c)) for n, c in zip(names, counts[1]) if c > 0]
  if nonfinite:
    raise ValueError(
        f'rigl_jax: at step {step} weights are NaN or infinite '
        f'({nonfinite[:4]} at positions the masks exclude): training '
        'diverged. Lower the learning rate, clip the gradients inside '
        'sparsify(optax.chain(optax.clip_by_global_norm(1.0), ...)), and '
        'leave rigl_acc_scale at 0 unless every parameter-shaped state of '
        'the optimizer may start at a multiple of the gradient (momentum '
        "may; Adam's second moment, which must stay non-negative, may not).")
  if bad:
    raise ValueError(
        f'rigl_jax: at step {step} weights that the masks '
        f'exclude are nonzero ({bad[:4]} nonzero weights): a transformation '
        'after sparsify(...) in an optax.chain changed its updates (e.g. '
        'optax.scale, scale_by_learning_rate, clip, add_decayed_weights or '
        'reduce_on_plateau after it), or the params were changed outside '
        'the optimizer. sparsify must be the last transformation: wrap the '
        'others inside it, e.g. rigl_jax.sparsify(optax.chain('
        'optax.scale_by_adam(), optax.scale(-lr)), ...).')
  return np.zeros(np.shape(step), np.int32)


def _leak_check(n_leaked: jax.Array, step: jax.Array,
                names: tuple[str, ...]) -> jax.Array:
  """0, after `_report_leak` has checked the counts on the host (it raises
  instead if any is nonzero); called on mask-update steps only.

  A `jax.pure_callback`, not `jax.debug.callback`: a program with an effect
  (a debug callback is one, wherever it sits) loses jit's C++ dispatch, and
  every call of a user's train step then went through Python: ~0.9 ms per
  step for a 4-layer MLP, 1.07x the dense step on the benchmark MLP,
  measured 2026-12-03.
  """
  def check(n, s):
    return jax.pure_callback(
        functools.partial(_report_leak, names=names),
        jax.ShapeDtypeStruct(np.shape(s), jnp.int32), n, s,
        vmap_method='broadcast_all')

  return jax.lax.cond(_any_member((step > 0) & jnp.any(n_leaked > 0)),
                      check, lambda n, s: jnp.zeros(np.shape(s), jnp.int32),
                      n_leaked, step)


# --- sparsify -----------------------------------------------------------------


def sparsify(inner: optax.GradientTransformation,
             method: Union[str, methods_lib.Method],
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
             stacked: layers_lib.Stacked = None,
             seed: int = 0,
             erk_power_scale: float = 1.0,
             sparsity_budget: str = 'exact',
             structure: Any = 'unstructured',
             check_leaks: bool = True,
             **method_kwargs: Any,
             ) -> SparseTransformation:
  """Wraps ``inner`` so that it trains a sparse network.

  Args:
    inner: any optax optimizer (e.g. ``optax.sgd(0.1, momentum=0.9)`` or an
      ``optax.chain``); it should include the learning rate, since
      ``sparsify`` must be the last transformation of a chain (see the
      module docstring).
    method: a registered name (``'dense'``, ``'static'``, ``'set'``,
      ``'snfs'``, ``'rigl'``, ``'pruning'``, ``'snip'``, ``'srigl'``,
      ``'granet'``, ``'topkast'``, or one added with
      `rigl_jax.methods.register`) or a `rigl_jax.Method` object.
    sparsity: the global fraction of zeros over the sparse leaves, in [0, 1).
    distribution: per-layer sparsity: ``'erk'``, ``'er'`` or ``'uniform'``.
    update_freq: steps between mask updates (Delta T).
    begin_step: first mask-update step.
    end_step: masks stop changing at this step (T_end); required for methods
      whose masks change.
    drop_fraction: alpha, the initial fraction of active weights replaced.
    drop_fraction_schedule: ``'cosine'``, ``'constant'`` or
      ``'exponential_K'``.
    init_masks: optional masks to start from (a pytree like params with a
      bool array per sparse leaf); each layer's nnz then comes from them.
    is_sparse: which leaves are sparse: None (`paths.default_is_sparse`:
      floating-point kernels and embeddings, never biases or norm
      parameters), path regexes, or a ``(path, leaf) -> bool`` predicate.
      None, zero-size and non-floating leaves are always dense.
    custom_sparsity: ``{path or regex: sparsity}`` overrides, left out of the
      distribution's budget (and of SNFS's redistribution).
    stacked: ``{path regex: axis}``: leaves holding a stack of layers along
      ``axis`` (``nn.scan``/``nn.vmap`` blocks, MaxText's
      ``param_scan_axis``). Each slice is then a layer of its own for the
      distribution, the masks, drop/grow counts, top-k and pruning.
    seed: seed of the random initial masks and of SET's regrowth (unless
      `masked_init` is given a ``key``).
    erk_power_scale: exponent of the ER/ERK raw densities.
    sparsity_budget: ``'exact'`` or ``'reference'``: how ER/ERK count the
      zeros and how many zeros a layer's mask holds (see
      `distributions.sparsity_distribution`); ``'reference'`` gives the
      official code's per-layer counts bit for bit.
    structure: ``'unstructured'``, or ``'N:M'`` (e.g. ``'2:4'``): every
      sparse layer keeps exactly N nonzeros in each group of M along its
      input dimension (see `rigl_jax.structure`); ``sparsity`` must then be
      1 - N/M.
    check_leaks: on each mask update, count the weights that the masks
      exclude but that are nonzero, and stop training with a `ValueError`
      naming the fix if there are any (a transformation after ``sparsify``
      in an ``optax.chain`` changed its updates). The count goes to the host
      through a `jax.pure_callback`, and JAX's persistent compilation cache
      never stores a program that holds a host callback: pass False, once
      ``sparsify`` is known to be the chain's last transformation, to let
      the step be cached (a restarted job then loads it instead of compiling
      the mask update again).
    **method_kwargs: the method's hyperparameters, e.g. ``snfs_momentum``
      (0.9), ``pruning_scope`` (``'layer'`` or ``'global'``),
      ``srigl_min_salient`` (0.3), ``topkast_penalty`` (1e-4); each
      method's, with its defaults, in `rigl_jax.methods.hyperparameters`
      and on the documentation's method page.

  Returns:
    A `SparseTransformation` (an `optax.GradientTransformationExtraArgs`
    with ``.method`` and ``.schedule``). Its ``update`` requires ``params``;
    extra keyword arguments go to ``inner``; ``mask_update=True|False`` (a
    Python bool) compiles the plain or the mask-update step without the
    `lax.cond`. Called outside `jax.jit` (and vmap, grad), ``update`` runs
    as one cached jitted program. Call `masked_init` (or mask the params
    with `apply_masks` and `get_masks`) so that the model never sees an
    unmasked weight.

  Raises:
    ValueError: for an unknown method, distribution or schedule, a sparsity
      outside [0, 1), ``update_freq < 1``, ``end_step <= begin_step``, an
      uncalled optax factory as ``inner``. Problems that need the params
      (no sparse leaf, bad ``init_masks``, unknown ``custom_sparsity``
      paths, unreachable ERK targets) raise at ``init``; params, grads or
      state that do not match ``init``'s raise at ``update``, naming the
      leaf.

  Example:
    >>> import jax.numpy as jnp, optax, rigl_jax
    >>> params = {'w': jnp.ones((4, 8)), 'b': jnp.zeros(8)}
    >>> tx = rigl_jax.sparsify(optax.sgd(0.1), 'rigl', sparsity=0.5,
    ...                        distribution='uniform', end_step=1000)
    >>> params, state = rigl_jax.masked_init(tx, params)
    >>> int(rigl_jax.get_masks(state)['w'].sum())
    16
    >>> tx.schedule.is_update_step(100), tx.schedule.is_update_step(101)
    (True, False)
  """
  inner = _check_inner(inner)
  _check_arguments(method_kwargs)
  m = methods_lib.get_method(method, **method_kwargs)
  sparsity = distributions.check_sparsity(sparsity)
  if distribution not in distributions.DISTRIBUTIONS:
    raise ValueError(f'unknown sparsity distribution {distribution!r}; valid '
                     f'choices are {list(distributions.DISTRIBUTIONS)}')
  if sparsity_budget not in distributions.BUDGETS:
    raise ValueError(f'unknown sparsity_budget {sparsity_budget!r}; valid '
                     f'choices are {list(distributions.BUDGETS)}')
  schedules.parse_drop_fraction_schedule(drop_fraction_schedule)
  _check_schedule_args(m, update_freq, begin_step, end_step, drop_fraction)
  pred = paths_lib.make_is_sparse(is_sparse)
  stack_rules = layers_lib.parse_stacked(stacked)
  custom_sparsity = dict(custom_sparsity or {})
  struct = structure_lib.get_structure(structure)
  if m.sparse and struct.sparsity is not None:
    if abs(sparsity - struct.sparsity) > 1e-6:
      raise ValueError(
          f'structure {struct.n}:{struct.m} fixes every sparse layer at '
          f'sparsity {struct.sparsity:g} (1 - N/M); got sparsity='
          f'{sparsity:g}')
    if custom_sparsity:
      raise ValueError('custom_sparsity cannot be combined with an N:M '
                       'structure; exclude layers with is_sparse instead')
  m.validate(structure=struct, custom_sparsity=custom_sparsity)
  if not isinstance(check_leaks, (bool, np.bool_)):
    raise ValueError(f'check_leaks must be True or False; got '
                     f'{check_leaks!r}')
  seed = int(seed)
  # Methods whose new connections start at other values than 0 return them
  # from the mask update as well.
  custom_grow = m.grow_init != 'zeros'
  schedule = schedules.MaskSchedule(
      update_freq=int(update_freq), begin_step=int(begin_step),
      end_step=(None if not m.dynamic else
                int(begin_step) + 1 if m.single_update else int(end_step)),
      include_end=m.include_end, drop_fraction=float(drop_fraction),
      drop_fraction_schedule=drop_fraction_schedule)

  def layout(params) -> tuple[list[tuple[str, Any]], Any, list[_Leaf]]:
    """The params' leaves (None as a leaf), treedef and sparse leaves."""
    flat, treedef = paths_lib.flatten(params)
    if not m.sparse:
      return flat, treedef, []
    sps = None
    if struct.sparsity is None:
      sps = paths_lib.flatten(distributions.sparsity_distribution(
          params, sparsity, distribution, is_sparse=is_sparse,
          custom_sparsity=custom_sparsity, erk_power_scale=erk_power_scale,
          stacked=stacked, sparsity_budget=sparsity_budget))[0]
    init_sps = None
    if m.initial_global_sparsity is not None and not m.starts_dense:
      init_sps = paths_lib.flatten(distributions.sparsity_distribution(
          params, m.initial_global_sparsity, distribution,
          is_sparse=is_sparse, custom_sparsity=custom_sparsity,
          erk_power_scale=erk_power_scale, stacked=stacked,
          sparsity_budget=sparsity_budget))[0]
    fixed = set(distributions.match_custom(
        custom_sparsity,
        list(distributions.sparse_layers(params, is_sparse, stacked))))
    leaves, next_id = [], 0
    for i, (path, x) in enumerate(flat):
      if x is None:
        continue
      if not (paths_lib.can_be_sparse(x) and pred(path, x)):
        continue
      shape = tuple(int(d) for d in np.shape(x))
      axis = layers_lib.stack_axis(stack_rules, path, shape)
      n = layers_lib.num_layers(shape, axis)
      lshape = layers_lib.layer_shape(shape, axis)
      struct.check(path, lshape)
      leaves.append(_Leaf(
          index=i, path=path, axis=axis, layer_shape=lshape,
          ids=np.arange(next_id, next_id + n),
          sparsity=struct.sparsity if sps is None else sps[i][1],
          fixed=path in fixed,
          init_sparsity=None if init_sps is None else min(
              init_sps[i][1], sps[i][1])))
      next_id += n
    if not leaves:
      raise ValueError(
          f'sparsify({m.name!r}) found no sparse leaf in the params: '
          f'is_sparse={is_sparse!r} matches none of '
          f'{[p for p, x in flat if x is not None][:12]}. Fix is_sparse '
          "(path regexes such as 'kernel'), or use method='dense'.")
    for pattern, _ in stack_rules:
      if not any(pattern.search(lf.path) for lf in leaves):
        raise ValueError(
            f'stacked names {pattern.pattern!r}, which matches no sparse '
            f'leaf; the sparse leaves are '
            f'{[lf.path for lf in leaves][:12]}')
    return flat, treedef, leaves

  def backward_sparsity(lf: _Leaf) -> float:
    return m.backward_sparsity_of(lf.sparsity, float(sparsity))

  def top_sets(theta_views: list[jax.Array], leaves: list[_Leaf],
               backward: bool) -> list[jax.Array]:
    """Each layer's top weights by magnitude: the forward sets (its
    sparsity) or the backward sets (Top-KAST)."""
    targets = [jnp.float32(backward_sparsity(lf) if backward else
                           lf.sparsity) for lf in leaves]
    return mask_update_lib.prune_layers(
        [jnp.abs(v) for v in theta_views],
        [jnp.ones(v.shape, jnp.bool_) for v in theta_views], targets, struct)

  def initial_masks(leaves: list[_Leaf], key: jax.Array,
                    flat: list[tuple[str, Any]]) -> list[jax.Array]:
    """Initial masks of the sparse leaves (layer views)."""
    if m.keeps_dense_weights:  # the top of the initial weights
      return top_sets([layers_lib.to_layers(flat[lf.index][1], lf.axis)
                       for lf in leaves], leaves, backward=False)
    if m.starts_dense:
      return [jnp.ones((len(lf.ids),) + lf.layer_shape, jnp.bool_)
              for lf in leaves]
    def layer_keys(lf):
      return jax.vmap(jax.random.fold_in, (None, 0))(
          key, jnp.asarray(lf.ids, jnp.uint32))
    if m.has_initial_masks:
      return [m.initial_masks(layer_keys(lf), lf.layer_shape, lf.sparsity)
              for lf in leaves]
    if isinstance(struct, structure_lib.NMStructure):
      return [jax.vmap(lambda k, s=lf.layer_shape: struct.random_mask(k, s))(
          layer_keys(lf)) for lf in leaves]
    shapes, keep = random_plan(leaves)
    drawn = masks_lib.random_layer_masks(key, shapes, keep)
    out, start = [], 0
    for lf in leaves:
      out.append(jnp.stack(drawn[start:start + len(lf.ids)]))
      start += len(lf.ids)
    return out

  def random_plan(leaves: list[_Leaf]) -> tuple[list[tuple[int, ...]],
                                                list[int]]:
    """Every layer's shape and active count, for random initial masks."""
    shapes, keep = [], []
    for lf in leaves:
      start = lf.sparsity if lf.init_sparsity is None else lf.init_sparsity
      n_keep = (int(np.prod(lf.layer_shape)) -
                distributions.num_zeros(lf.layer_shape, start,
                                        sparsity_budget))
      shapes += [lf.layer_shape] * len(lf.ids)
      keep += [n_keep] * len(lf.ids)
    return shapes, keep

  def init_arrays(params, key, given):
    flat, treedef, leaves = layout(params)
    mask_leaves: list[Any] = [None] * len(flat)
    if given is not None:
      checked = paths_lib.flatten(given)[0]
      for lf in leaves:
        mask_leaves[lf.index] = checked[lf.index][1]
    else:
      for lf, mk in zip(leaves, initial_masks(leaves, key, flat)):
        mask_leaves[lf.index] = layers_lib.from_layers(mk, lf.axis)
    masks = jax.tree.unflatten(treedef, mask_leaves)
    masked = masks_lib.apply_masks(params, masks)
    if m.keeps_dense_weights:
      # The dense weights and the backward sets; the optimizer's state
      # follows the dense weights.
      aux = dense_aux(params, flat, treedef, leaves)
      inner_state = inner.init(params)
    else:
      aux, inner_state = m.init_aux(params, masks), inner.init(masked)
    return SparseState(
        step=jnp.zeros([], jnp.int32),
        masks=masks,
        inner_state=inner_state,
        aux=aux,
        drop_fraction=jnp.zeros([], jnp.float32),
        mask_churn=jnp.zeros([], jnp.float32),
        key=key)

  def dense_aux(params, flat, treedef, leaves) -> DenseWeights:
    dense: list[Any] = [None] * len(flat)
    backward: list[Any] = [None] * len(flat)
    views = [layers_lib.to_layers(flat[lf.index][1], lf.axis)
             for lf in leaves]
    for lf, b in zip(leaves, top_sets(views, leaves, backward=True)):
      dense[lf.index] = flat[lf.index][1]
      backward[lf.index] = layers_lib.from_layers(b, lf.axis)
    del params
    return DenseWeights(jax.tree.unflatten(treedef, dense),
                        jax.tree.unflatten(treedef, backward))

  def dense_weights_update(state, params, flat, p_def, leaves, mask_list,
                           m_def, grad_list, g_def, mask_update,
                           extra_args):
    """One step of a method that keeps dense weights (Top-KAST): the
    gradient (plus the exploration penalty) updates the dense weights on
    the backward sets; the sets follow their magnitudes on the schedule;
    the parameters are the dense weights on the forward sets."""
    theta = paths_lib.flatten(state.aux.weights)[0]
    backward = paths_lib.flatten(state.aux.backward)[0]
    sparse_at = {lf.index: lf for lf in leaves}
    grads_in, inner_params = [], []
    for i, (g, (_, th), (_, b)) in enumerate(zip(grad_list, theta,
                                                 backward)):
      if i not in sparse_at or g is None:
        grads_in.append(g)
        inner_params.append(flat[i][1])
        continue
      density = 1.0 - sparse_at[i].sparsity
      g = g + m.penalty_gradient(th, mask_list[i], b, density).astype(g.dtype)
      grads_in.append(jnp.where(b, g, jnp.zeros_like(g)))
      inner_params.append(th)
    new_updates, new_inner = inner.update(
        jax.tree.unflatten(g_def, grads_in), state.inner_state,
        jax.tree.unflatten(p_def, inner_params), **extra_args)
    u_list = [u for _, u in paths_lib.flatten(new_updates)[0]]
    new_theta = list(inner_params)
    for i, lf in sparse_at.items():
      b = backward[i][1]
      new_theta[i] = inner_params[i] + jnp.where(
          b, u_list[i], jnp.zeros_like(u_list[i])).astype(inner_params[i].dtype)
    due = (jnp.asarray(bool(mask_update)) if mask_update is not None else
           schedule.is_update_step(state.step))
    views = [layers_lib.to_layers(new_theta[lf.index], lf.axis)
             for lf in leaves]
    old_f = [layers_lib.to_layers(mask_list[lf.index], lf.axis)
             for lf in leaves]
    old_b = [layers_lib.to_layers(backward[lf.index][1], lf.axis)
             for lf in leaves]

    def recompute(v):
      return (top_sets(v, leaves, backward=False),
              top_sets(v, leaves, backward=True))

    def keep(_):
      return old_f, old_b

    if mask_update is False:
      new_f, new_b = old_f, old_b
    else:
      new_f, new_b = jax.lax.cond(_any_member(due), recompute, keep, views)
      new_f = [jnp.where(due, n, o) for n, o in zip(new_f, old_f)]
      new_b = [jnp.where(due, n, o) for n, o in zip(new_b, old_b)]
    masks_out, back_out = list(mask_list), [x for _, x in backward]
    out = list(u_list)
    for lf, f, b in zip(leaves, new_f, new_b):
      i = lf.index
      masks_out[i] = layers_lib.from_layers(f, lf.axis)
      back_out[i] = layers_lib.from_layers(b, lf.axis)
      alpha = jnp.where(masks_out[i], new_theta[i],
                        jnp.zeros_like(new_theta[i]))
      out[i] = alpha - flat[i][1]
    churn = mask_update_lib.churn(old_f, new_f)
    aux = DenseWeights(jax.tree.unflatten(p_def, new_theta),
                       jax.tree.unflatten(p_def, back_out))
    return jax.tree.unflatten(g_def, out), SparseState(
        step=optax.safe_increment(state.step),
        masks=jax.tree.unflatten(m_def, masks_out), inner_state=new_inner,
        aux=aux, drop_fraction=state.drop_fraction,
        mask_churn=jnp.where(due, churn, state.mask_churn), key=state.key)

  jitted_init = _one_time_program(init_arrays)
  # For `masked_init`: the masked params from the same program (one compile
  # instead of two).
  def masked_init_arrays(params, key, given):
    state = init_arrays(params, key, given)
    return masks_lib.apply_masks(params, state.masks), state

  jitted_masked_init = _one_time_program(masked_init_arrays)

  def init_inputs(params, key):
    key = _INIT_KEY.get() if key is None else key
    key = jax.random.PRNGKey(seed) if key is None else key
    given = None
    if init_masks is not None and m.sparse:
      flat, _, leaves = layout(params)
      flags = jax.tree.unflatten(
          paths_lib.flatten(params)[1],
          [i in {lf.index for lf in leaves} for i in range(len(flat))])
      given = masks_lib.check_init_masks(init_masks, params, flags)
    return params, key, given

  def init_fn(params):
    return _committed_like(params, jitted_init(*init_inputs(params, None)))

  def masked_init_fn(params, key=None):
    params, key, given = init_inputs(params, key)
    device = _one_cpu_device(params, key)
    if given is None and device is not None:
      flat, treedef, leaves = layout(params)
      if random_start(leaves):
        return host_masked_init(params, key, device, flat, treedef, leaves)
    return _committed_like(params, jitted_masked_init(params, key, given))

  def random_start(leaves: list[_Leaf]) -> bool:
    """Whether the initial masks are `random_layer_masks`' draws, one layer
    per leaf."""
    return (m.sparse and not m.keeps_dense_weights and not m.starts_dense
            and not m.has_initial_masks
            and not isinstance(struct, structure_lib.NMStructure)
            and all(lf.axis is None for lf in leaves))

  draw_programs: dict[Any, Any] = {}

  def host_masked_init(params, key, device, flat, treedef, leaves):
    """`masked_init` on one CPU device, without a kernel per leaf.

    One program draws every layer's mask (`masks.random_selection`, the
    draws `init_arrays` makes); the host slices it into the masks and masks
    the params with numpy; a second program builds the inner state. Same
    arrays as the one-program path (a test checks), but compiling per-leaf
    slices and selects took most of that path's time on a large tree
    (ResNet-50: 54 leaves, three kernels each).
    """
    shapes, keep = random_plan(leaves)
    plan = (tuple(shapes), tuple(keep))
    if plan not in draw_programs:
      draw_programs[plan] = _one_time_program(
          lambda k: masks_lib.random_selection(k, shapes, keep))
    sel = np.asarray(draw_programs[plan](key))
    put = lambda x: jax.device_put(x, device, may_alias=False)  # pylint: disable=unnecessary-lambda-assignment
    mask_leaves: list[Any] = [None] * len(flat)
    masked_leaves = [put(x) if hasattr(x, 'shape') else x for _, x in flat]
    for lf, mk in zip(leaves, masks_lib.split_selection(sel, shapes)):
      p = np.asarray(flat[lf.index][1])
      mask_leaves[lf.index] = put(mk)
      masked_leaves[lf.index] = put(np.where(mk, p, np.zeros((), p.dtype)))
    masks = jax.tree.unflatten(treedef, mask_leaves)
    masked = jax.tree.unflatten(treedef, masked_leaves)
    # Committed, as the masked params are (see `_committed_like`).
    inner_state, aux, zeros = jax.device_put(
        jitted_state_rest(params, masked, masks), device)
    # Every array new, as the program's outputs are: a caller may donate
    # the state without losing its own key.
    return masked, SparseState(
        step=zeros[0], masks=masks, inner_state=inner_state, aux=aux,
        drop_fraction=zeros[1], mask_churn=zeros[2], key=put(key))

  def state_rest(params, masked, masks):
    """What `init_arrays` adds to the masks: the inner state, the method's
    aux and the zero counters."""
    return (inner.init(masked), m.init_aux(params, masks),
            (jnp.zeros([], jnp.int32), jnp.zeros([], jnp.float32),
             jnp.zeros([], jnp.float32)))

  jitted_state_rest = _one_time_program(state_rest)

  def mask_step(leaves, params_l, grads_l, masks_l, aux_l, updates_l,
                step, key):
    """The method's rule on the layer views, and the leak check."""
    (params_l, grads_l, masks_l, aux_l, updates_l, step, key
     ) = jax.lax.optimization_barrier(
         (params_l, grads_l, masks_l, aux_l, updates_l, step, key))
    checked = (_leak_check(mask_update_lib.leaked(params_l, masks_l), step,
                           tuple(lf.path for lf in leaves)) if check_leaks
               else jnp.zeros([], jnp.int32))
    stepped = [p + u.astype(p.dtype) for p, u in zip(params_l, updates_l)]
    ctx = methods_lib.MaskContext(
        weights=params_l, stepped=stepped, grads=grads_l, masks=masks_l,
        aux=aux_l, sparsities=[lf.sparsity for lf in leaves],
        fixed=[lf.fixed for lf in leaves],
        layer_ids=[lf.ids for lf in leaves],
        key=jax.random.fold_in(key, step), step=step, schedule=schedule,
        structure=struct, sparsity=sparsity)
    new, frac = m.update_masks(ctx)
    # The check's result is read (it is always 0), so that it is kept.
    frac = jnp.where(checked == 0, jnp.asarray(frac, jnp.float32), jnp.nan)
    values = (m.grow_values(ctx, new) if custom_grow else
              [None] * len(new))
    return (new, jnp.asarray(frac, jnp.float32),
            mask_update_lib.churn(masks_l, new), values)

  def update_fn(updates, state, params=None, *, mask_update=None,
                **extra_args):
    """One step; see `sparsify`."""
    if params is None:
      raise ValueError('sparsify(...).update needs params: call '
                       'tx.update(grads, state, params)')
    if mask_update is not None and not isinstance(mask_update, bool):
      raise ValueError('mask_update must be None, True or False (a Python '
                       f'bool, static under jit); got {mask_update!r}')
    if mask_update is None and m.dynamic:
      # The program holds the mask update's scratch; on CPU keep it on the
      # heap rather than mapped afresh on every step (see cpu_allocator).
      cpu_allocator.tune_for_cpu_steps()
    if not isinstance(state, SparseState):
      raise ValueError(
          f'sparsify(...).update got a state of type {type(state).__name__}, '
          'not the SparseState its init returned; inside optax.chain, pass '
          "the chain's whole state to the chain's update")
    flat, p_def, leaves = layout(params)
    names = [p for p, _ in flat]
    mask_list, m_def = _aligned('the masks in the state', state.masks, names)
    grad_list, g_def = _aligned('the gradients (updates)', updates, names)
    for lf in leaves:
      mk = mask_list[lf.index]
      if mk is None or np.shape(mk) != np.shape(flat[lf.index][1]):
        raise ValueError(
            f'params leaf {lf.path!r} has shape '
            f'{tuple(np.shape(flat[lf.index][1]))}, but the optimizer was '
            f'initialised with a mask of shape '
            f'{None if mk is None else tuple(np.shape(mk))}')
    param_list = [x for _, x in flat]
    if m.keeps_dense_weights:
      return dense_weights_update(state, params, flat, p_def, leaves,
                                  mask_list, m_def, grad_list, g_def,
                                  mask_update, extra_args)

    aux = m.update_aux(state.aux, updates, state.masks)
    step = optax.safe_increment(state.step)

    def inner_step(masks_l, grads_l, inner_state, params_l):
      """The inner optimizer on the gradients of the active weights."""
      return inner.update(
          jax.tree.unflatten(g_def, _masked_list(masks_l, grads_l)),
          inner_state, jax.tree.unflatten(p_def, params_l), **extra_args)

    if not m.dynamic or mask_update is False:
      new_updates, new_inner = inner_step(mask_list, grad_list,
                                          state.inner_state, param_list)
      return mask_update_lib.masked_updates(
          new_updates, params, state.masks, jnp.zeros([], jnp.bool_)), (
              state._replace(step=step, aux=aux, inner_state=_fused_state(
                  new_inner, state.step)))

    # A mask update, as the schedule (or the caller) says.
    due = (jnp.ones([], jnp.bool_) if mask_update else
           schedule.is_update_step(state.step))
    views = lambda xs: [layers_lib.to_layers(xs[lf.index], lf.axis)
                        for lf in leaves]
    aux_list = ([None] * len(flat) if aux == () else
                [a for _, a in paths_lib.flatten(aux)[0]])
    operands = (param_list, grad_list, mask_list,
                [None if aux_list[lf.index] is None else
                 layers_lib.to_layers(aux_list[lf.index], lf.axis)
                 for lf in leaves],
                state.inner_state, state.step, state.key)
    old_views = views(mask_list)

    def run(ops):
      p_in, g_in, m_in, aux_in, inner_in, step_in, key_in = ops
      # The updates of the stepped weights (which SET, SNFS and pruning
      # rank), computed inside the branch from the old masks: an operand
      # computed outside made XLA:CPU write the updates out on every step,
      # and the inner state twice. A method that does not read them (RigL)
      # drops this work.
      again, _ = inner_step(m_in, g_in, inner_in, p_in)
      u_in = [u for _, u in paths_lib.flatten(again)[0]]
      new, frac, churn, values = mask_step(
          leaves, views(p_in), views(g_in), views(m_in), aux_in,
          views(u_in), step_in, key_in)
      # A vmapped member that is not due keeps its masks.
      new = [jnp.where(due, n, o) for n, o in zip(new, old_views)]
      return (new, jnp.where(due, frac, state.drop_fraction),
              jnp.where(due, churn, state.mask_churn), values)

    def keep(_):
      values = [jnp.zeros(v.shape, jnp.float32) if custom_grow else None
                for v in old_views]
      return old_views, state.drop_fraction, state.mask_churn, values

    def when_due(fn, otherwise, ops):
      """``fn(ops)`` on a mask-update step: directly when the caller says
      so, else under `lax.cond` (any vmapped member due)."""
      return (fn(ops) if mask_update else
              jax.lax.cond(_any_member(due), fn, otherwise, ops))

    new_views, frac, churn, value_views = when_due(run, keep, operands)

    new_list = list(mask_list)
    grow_values: list[Any] = [None] * len(flat)
    for lf, nv, vv in zip(leaves, new_views, value_views):
      new_list[lf.index] = layers_lib.from_layers(nv, lf.axis)
      if vv is not None:
        grow_values[lf.index] = layers_lib.from_layers(vv, lf.axis)
    new_masks = jax.tree.unflatten(m_def, new_list)
    skip = due & m.skips_weight_update
    # A method that skips the weight update on a mask-update step discards
    # that step's updates and holds the parameter-shaped inner state, so
    # its gradients can be masked with the new masks (equal to the old ones
    # on every other step): the step's fused loops then read one mask per
    # weight instead of two. A method that applies the step (pruning)
    # masks the gradients with the masks the weights were trained under.
    grad_masks = new_list if m.skips_weight_update else mask_list
    new_updates, new_inner = inner_step(grad_masks, grad_list,
                                        state.inner_state, param_list)
    grown = lambda news, olds: jax.tree.unflatten(p_def, [  # pylint: disable=unnecessary-lambda-assignment
        None if o is None else n & ~o for n, o in zip(news, olds)])
    out_updates = mask_update_lib.masked_updates(
        new_updates, params, new_masks, skip,
        grown=grown(new_list, mask_list) if custom_grow else None,
        grow_values=(jax.tree.unflatten(p_def, grow_values) if custom_grow
                     else None))

    def reset(ops):
      """The inner state where masks changed (`reset_inner_state`)."""
      old_inner, stepped_inner, p_in, m_in, n_in, g_in = ops
      changed = [None if o is None else n != o for n, o in zip(n_in, m_in)]
      fresh = inner.init(masks_lib.apply_masks(
          p_in, jax.tree.unflatten(m_def, n_in)))
      out = mask_update_lib.reset_inner_state(
          inner, old_inner, stepped_inner, fresh,
          jax.tree.unflatten(p_def, changed), hold=skip, update=due,
          grown=grown(n_in, m_in) if m.acc_scale else None,
          grown_value=(jax.tree.unflatten(p_def, [
              None if g is None else m.acc_scale * g.astype(jnp.float32)
              for g in g_in]) if m.acc_scale else None))
      return jax.tree.map(lambda o, s: o.astype(s.dtype), out, stepped_inner)

    # The reset runs under its own `lax.cond`, only when masks change: on
    # the plain step the inner state passes through the untaken branch
    # without a copy and its fused loops read no second mask. As one
    # select, the reset made every step read the old and the new masks
    # (2 bytes more per sparse weight than the static step).
    reset_ops = (state.inner_state, _fused_state(new_inner, state.step),
                 params, mask_list, new_list, grad_list)
    inner_state = when_due(reset, lambda ops: ops[1], reset_ops)
    return out_updates, SparseState(
        step=step, masks=new_masks, inner_state=inner_state, aux=aux,
        drop_fraction=frac, mask_churn=churn, key=state.key)

  jitted_update = jax.jit(update_fn, static_argnames='mask_update')

  def update(updates, state, params=None, *, mask_update=None,
             **extra_args):
    """One step; see `sparsify`. Called outside any transformation (an
    un-jitted loop), it runs as one cached `jax.jit` program: run op by
    op, the mask update's `lax.cond` and search loops were traced and
    compiled again on every call (~3 s a step for a two-layer MLP)."""
    if (mask_update is None or isinstance(mask_update, bool)) and _is_eager(
        (updates, state, params, extra_args)):
      return jitted_update(updates, state, params, mask_update=mask_update,
                           **extra_args)
    return update_fn(updates, state, params, mask_update=mask_update,
                     **extra_args)

  tx = SparseTransformation(init_fn, update)
  tx.method = m
  tx.schedule = schedule
  tx.masked_init = masked_init_fn
  return tx



def _method_constructor(name: str, default_sparsity: Optional[float] = None):
  """Builds the optax-style constructor ``rigl_jax.<name>(inner, ...)``."""

  def constructor(inner: optax.GradientTransformation, **kwargs
                  ) -> SparseTransformation:
    _check_arguments(kwargs)
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
srigl = _method_constructor('srigl')
granet = _method_constructor('granet')
topkast = _method_constructor('topkast')

# sparsify's own keyword fields (init_masks is not a config field).
# `sparsify`'s own fields, from its signature (what `from_config` reads).
_SPARSIFY_FIELDS = tuple(
    k for k, p in inspect.signature(sparsify).parameters.items()
    if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
    and k not in ('inner', 'init_masks'))


def _closest(unknown: list[str], valid: list[str]) -> str:
  """`` (did you mean 'a' for 'b'?)`` for the unknown names that have a
  close valid one, else ''."""
  hints = [f'{close[0]!r} for {k!r}' for k in unknown
           for close in [difflib.get_close_matches(k, valid, n=1)] if close]
  return f' (did you mean {", ".join(hints)}?)' if hints else ''


def _check_arguments(names: Any) -> None:
  """One ValueError for keyword arguments that neither `sparsify` nor any
  registered method takes, with the closest valid name of each."""
  valid = sorted(set(config_fields()) | {'init_masks'})
  unknown = sorted(set(names) - set(valid))
  if unknown:
    raise ValueError(
        f'unknown sparsify argument(s) {unknown}{_closest(unknown, valid)}; '
        f"valid ones are sparsify's {[*_SPARSIFY_FIELDS, 'init_masks']} "
        f"and the methods' {sorted(methods_lib.all_hyperparameters())}")


def config_fields() -> tuple[str, ...]:
  """The fields `from_config` accepts: `sparsify`'s keyword arguments and
  every registered method's hyperparameters."""
  return _SPARSIFY_FIELDS + tuple(sorted(
      set(methods_lib.all_hyperparameters()) - set(_SPARSIFY_FIELDS)))


CONFIG_FIELDS = config_fields()


def config_defaults() -> dict[str, Any]:
  """``{field: default}`` of the `config_fields` that have one (``method``
  and ``sparsity`` have none): what a config that omits a field runs with."""
  out = {k: p.default
         for k, p in inspect.signature(sparsify).parameters.items()
         if k in _SPARSIFY_FIELDS and p.default is not p.empty}
  out.update(methods_lib.all_hyperparameters())
  return out


def from_config(inner: optax.GradientTransformation, config: Any,
                *, init_masks: Any = None) -> SparseTransformation:
  """`sparsify` from an ``ml_collections.ConfigDict`` (or any mapping).

  Args:
    inner: the optax optimizer to wrap.
    config: fields named like `sparsify`'s arguments (see `config_fields`);
      ``method`` and ``sparsity`` are required, the rest default as in
      `sparsify`. ``is_sparse`` may be a regex or a list of regexes.
    init_masks: optional initial masks.

  Returns:
    The wrapped optimizer.

  Raises:
    ValueError: for unknown fields (naming the valid ones) or bad values.
  """
  fields = dict(config.to_dict() if hasattr(config, 'to_dict') else config)
  valid = config_fields()
  unknown = sorted(set(fields) - set(valid))
  if unknown:
    raise ValueError(f'unknown sparsity config field(s) {unknown}'
                     f'{_closest(unknown, list(valid))}; valid fields are '
                     f'{list(valid)}')
  if 'method' not in fields:
    raise ValueError(f'the sparsity config needs a method; valid choices are '
                     f'{list(methods_lib.names())}')
  method = fields.pop('method')
  if method != 'dense' and 'sparsity' not in fields:
    raise ValueError('the sparsity config needs a sparsity in [0, 1)')
  fields.setdefault('sparsity', 0.0)
  if isinstance(fields.get('is_sparse'), (list, tuple)):
    fields['is_sparse'] = list(fields['is_sparse'])
  if fields.get('stacked') is not None:
    fields['stacked'] = dict(fields['stacked'])
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


def masked_init(tx: optax.GradientTransformation, params: Any, *,
                key: Optional[jax.Array] = None
                ) -> tuple[Any, optax.OptState]:
  """Initialises ``tx`` and masks ``params`` so the model never sees a pruned
  weight, not even at step 0.

  Args:
    tx: a `sparsify` optimizer (possibly inside an ``optax.chain``).
    params: freshly initialised parameters.
    key: optional PRNG key of the initial masks and of SET's random growth
      (instead of ``seed``); ``jax.vmap`` over keys gives an ensemble whose
      members have different masks.

  Returns:
    ``(masked_params, opt_state)``.

  Example:
    >>> import jax, jax.numpy as jnp, optax, rigl_jax
    >>> tx = rigl_jax.set_(optax.sgd(0.1), sparsity=0.5, end_step=100)
    >>> keys = jax.random.split(jax.random.PRNGKey(0), 2)
    >>> params, state = jax.vmap(lambda k: rigl_jax.masked_init(
    ...     tx, {'w': jnp.ones((4, 4))}, key=k))(keys)
    >>> masks = rigl_jax.get_masks(state)['w']
    >>> masks.shape, bool((masks[0] != masks[1]).any())
    ((2, 4, 4), True)
  """
  if isinstance(tx, SparseTransformation):
    return tx.masked_init(params, key)
  if key is None:
    state = tx.init(params)
  else:
    with init_key(key):
      state = tx.init(params)
  return _apply_masks_jit(params, get_masks(state)), state


_apply_masks_jit = jax.jit(masks_lib.apply_masks)
