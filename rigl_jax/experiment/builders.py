"""From a config to the objects a run needs: data, model, optimizer, state.

`build(config)` validates the config and builds the dataset, the Flax model,
the learning-rate schedule and the `rigl_jax.sparsify` optimizer;
`create_train_state` initialises a masked `TrainState` (directly where each
leaf lives on a mesh); `restore_train_state` gives the newest good checkpoint
of a workdir. The training loop (`train`), the ticket searches, export and
the analysis tools all build through here.
"""

from __future__ import annotations

import os
from typing import Any, Callable, NamedTuple

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import optax

import rigl_jax
from rigl_jax.experiment import checkpoints as checkpoints_lib
from rigl_jax.experiment import data as data_lib
from rigl_jax.experiment import models as models_lib
from rigl_jax.experiment import optimizers
from rigl_jax.experiment import sharding as sharding_lib
from rigl_jax.experiment import steps as steps_lib
from rigl_jax.experiment import validation


@flax.struct.dataclass
class TrainState:
  """Everything a run needs to continue: one pytree, checkpointed whole."""
  step: jax.Array
  params: Any
  batch_stats: Any
  opt_state: Any
  rng: jax.Array


class Experiment(NamedTuple):
  """What `build` makes from a config."""
  data: data_lib.Data
  model: nn.Module
  tx: optax.GradientTransformation
  lr_fn: Callable[[Any], Any]
  total_steps: int


def build(config: ml_collections.ConfigDict) -> Experiment:
  """Validates the config by building data, model and optimizer from it.

  Args:
    config: the experiment config (see ``configs/default.py``).

  Returns:
    An `Experiment` ``(data, model, tx, lr_fn, total_steps)``.

  Raises:
    ValueError: naming the bad field and the valid choices.
  """
  validation.validate(config)
  data = data_lib.get_data(config.data, seed=config.seed)
  return Experiment(data, *build_training(config, data.info))


def build_training(config: ml_collections.ConfigDict,
                   info: data_lib.DatasetInfo
                   ) -> tuple[nn.Module, optax.GradientTransformation,
                              Callable[[Any], Any], int]:
  """Model, optimizer, learning-rate schedule and run length for a dataset
  of shape ``info``: `build` without reading the data (the benchmarks time
  a config's step on synthetic batches with it).

  Args:
    config: the experiment config, already validated.
    info: the dataset's `DatasetInfo`.

  Returns:
    ``(model, tx, lr_fn, total_steps)``.

  Raises:
    ValueError: bad ``config.model.kwargs``.
  """
  try:
    model = models_lib.get_model(config.model.name,
                                 num_classes=info.num_classes,
                                 dtype=jnp.dtype(config.model.get(
                                     'dtype', 'float32')),
                                 **config.model.get('kwargs', {}))
  except TypeError as e:
    raise ValueError(f'bad config.model.kwargs for {config.model.name!r}: '
                     f'{e}') from None
  total_steps = steps_lib.num_train_steps(config, info.num_train)
  lr_fn = optimizers.create_learning_rate_fn(config, total_steps)
  tx = optimizers.create_optimizer(
      config, total_steps, lr_fn,
      init_masks=_twin_masks(config, model, info, total_steps, lr_fn))
  return model, tx, lr_fn, total_steps


def _dummy_input(info) -> jax.Array:
  dtype = jnp.float32 if info.kind == 'image' else jnp.int32
  return jnp.zeros((1,) + tuple(info.input_shape), dtype)


def _init_variables(model, rng, dummy) -> Any:
  """``model.init``; an unrolled transformer takes its scanned twin's
  weights, unstacked (`models.transformer.scanned_twin`)."""
  twin = models_lib.transformer.scanned_twin(model)
  rngs = {'params': rng, 'dropout': rng}
  if twin is None:
    return model.init(rngs, dummy, train=False)
  variables = dict(twin.init(rngs, dummy, train=False))
  variables['params'] = models_lib.transformer.unstack_blocks(
      variables['params'], model.num_layers)
  return variables


def _twin_masks(config, model, info, total_steps, lr_fn) -> Any:
  """The initial masks of an unrolled transformer: its scanned twin's
  (drawn from the same seed), unstacked; None for any other model."""
  twin = models_lib.transformer.scanned_twin(model)
  if twin is None:
    return None
  twin_config = ml_collections.ConfigDict(config.to_dict())
  twin_config.model.kwargs = dict(twin_config.model.get('kwargs') or {},
                                  scan_layers=True)
  twin_tx = optimizers.create_optimizer(twin_config, total_steps, lr_fn)
  shapes = jax.eval_shape(
      lambda: twin.init(jax.random.PRNGKey(0), _dummy_input(info),
                        train=False))['params']
  zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)
  masks = rigl_jax.get_masks(rigl_jax.masked_init(twin_tx, zeros)[1])
  if all(m is None for m in jax.tree.leaves(
      masks, is_leaf=lambda m: m is None)):
    return None  # dense
  return models_lib.transformer.unstack_blocks(masks, model.num_layers)


def _state_init(model, tx, info, rng) -> tuple[Callable, jax.Array]:
  """``(init, key)``: ``init(key)`` builds the masked initial `TrainState`."""
  init_rng, state_rng = jax.random.split(rng)
  dummy = _dummy_input(info)

  def init(r):
    variables = _init_variables(model, r, dummy)
    params, opt_state = rigl_jax.masked_init(tx, variables['params'])
    return TrainState(step=jnp.zeros([], jnp.int32), params=params,
                      batch_stats=variables.get('batch_stats'),
                      opt_state=opt_state, rng=state_rng)

  return init, init_rng


def train_state_shardings(config, model, tx, info, rng, mesh) -> Any:
  """Shardings of the `TrainState` on ``mesh``.

  Params are split by the `rigl_jax.experiment.sharding` rules of
  ``config.sharding``; every mask and optimizer leaf like its parameter; the
  rest replicated.

  Returns:
    A `TrainState` of `NamedSharding`s.
  """
  init, init_rng = _state_init(model, tx, info, rng)
  abstract = jax.eval_shape(init, init_rng)
  sharding_cfg = config.get('sharding') or {}
  specs = sharding_lib.params_specs(
      abstract.params, mesh, rules=tuple(sharding_cfg.get('rules', ())),
      fsdp=bool(sharding_cfg.get('fsdp', False)),
      model_dims=models_lib.model_dims(config.model.name),
      stacked=models_lib.config_stacked(config))
  return sharding_lib.state_shardings(abstract, abstract.params, specs, mesh)


def create_train_state(config, model, tx, info, rng,
                       shardings: Any = None) -> TrainState:
  """Initialises params, masks them once, and builds the optimizer state.

  Args:
    config: the experiment config.
    model: the Flax module.
    tx: the `sparsify` optimizer.
    info: the dataset's `DatasetInfo` (input shape and kind).
    rng: PRNG key of the run.
    shardings: `train_state_shardings(...)`, to create every leaf directly
      where it lives; None: the default device.

  Returns:
    The initial `TrainState` (params already masked).
  """
  del config  # the same signature as the other builders
  init, init_rng = _state_init(model, tx, info, rng)
  return jax.jit(init, out_shardings=shardings)(init_rng)


def restore_train_state(config: ml_collections.ConfigDict, workdir: str
                        ) -> tuple[TrainState, int]:
  """The newest good checkpoint of a run, on the default device.

  Args:
    config: the config the run was written with.
    workdir: the run's workdir.

  Returns:
    ``(state, step)``; ``step`` is 0 (and ``state`` freshly initialised) if
    the run has no checkpoint.

  Raises:
    ValueError: incompatible config, or every checkpoint damaged.
  """
  exp = build(config)
  state = create_train_state(config, exp.model, exp.tx, exp.data.info,
                             jax.random.PRNGKey(config.seed))
  ckpts = checkpoints_lib.Checkpoints(
      os.path.join(os.path.abspath(workdir), 'checkpoints'), config.to_dict(),
      keep=config.get('keep_checkpoints', 2))
  try:
    return ckpts.restore(state)
  finally:
    ckpts.close()
