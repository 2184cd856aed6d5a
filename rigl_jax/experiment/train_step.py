"""The jitted train and eval steps, as the loop runs them.

``make_train_step`` is Algorithm 1's inner loop around any Flax model:
forward, dense gradient, the sparse optimizer's update (the mask update on
the steps its schedule names). `train` runs it; the ticket-search drivers
and ``benchmarks/train_step.py`` call it too. Only jax, optax, flax and the
core: no data, I/O or metric-writer libraries.
"""

from __future__ import annotations

from typing import Any, Callable, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

import rigl_jax
from rigl_jax.experiment.builders import TrainState

def loss_and_metrics(logits, batch, kind: str, num_classes: int,
                      label_smoothing: float):
  """Cross-entropy (label-smoothed for training) and accuracy, per example."""
  labels = batch['label'] if kind == 'image' else batch['targets']
  one_hot = jax.nn.one_hot(labels, num_classes)
  if label_smoothing:
    one_hot = optax.smooth_labels(one_hot, label_smoothing)
  loss = optax.softmax_cross_entropy(logits.astype(jnp.float32), one_hot)
  correct = (jnp.argmax(logits, -1) == labels).astype(jnp.float32)
  if kind == 'text':  # average over the sequence
    loss, correct = loss.mean(-1), correct.mean(-1)
  return loss, correct


def _all_finite(loss: jax.Array, grads: Any) -> jax.Array:
  finite = jnp.isfinite(loss)
  for g in jax.tree.leaves(grads):
    finite &= jnp.all(jnp.isfinite(g))
  return finite


def make_train_step(model: nn.Module, tx, lr_fn, kind: str, num_classes: int,
                    label_smoothing: float, *, on_nonfinite: str = 'stop',
                    state_sharding: Any = None,
                    batch_sharding: Any = None,
                    param_transform: Optional[Callable[[Any], Any]] = None
                    ) -> Callable:
  """The jitted step: forward, dense gradient, sparse optimizer update.

  Args:
    model: the Flax module.
    tx: the `sparsify` optimizer.
    lr_fn: the learning-rate schedule (for the metrics).
    kind: 'image' or 'text'.
    num_classes: classes (or vocabulary size).
    label_smoothing: for the training loss.
    on_nonfinite: 'stop' (the step's ``finite`` metric tells the loop) or
      'skip' (a step with a NaN/Inf loss or gradient leaves the state as it
      was, apart from the step counter).
    state_sharding: shardings of the `TrainState` (None: jit's default).
    batch_sharding: sharding of every batch array.
    param_transform: the weights the model sees, from the params (the
      gradient flows through it); None: the params themselves.

  Returns:
    ``step(state, batch, mask_update=None) -> (state, metrics)``, jitted,
    donating the state. ``mask_update`` (a Python bool, static; see
    ``tx.schedule.is_update_step``) compiles the plain step and the mask-update step
    as two programs; None keeps one program with a `lax.cond`.
  """
  inputs_key = 'image' if kind == 'image' else 'inputs'

  def train_step(state: TrainState, batch, mask_update=None):
    rng = jax.random.fold_in(state.rng, state.step)

    def loss_fn(params):
      variables = {'params': (params if param_transform is None
                              else param_transform(params))}
      if state.batch_stats is not None:
        variables['batch_stats'] = state.batch_stats
      logits, new_vars = model.apply(
          variables, batch[inputs_key], train=True, mutable=['batch_stats'],
          rngs={'dropout': rng})
      loss, correct = loss_and_metrics(logits, batch, kind, num_classes,
                                        label_smoothing)
      return loss.mean(), (new_vars.get('batch_stats'), correct.mean())

    (loss, (batch_stats, acc)), grads = jax.value_and_grad(
        loss_fn, has_aux=True)(state.params)
    finite = _all_finite(loss, grads)
    updates, opt_state = tx.update(grads, state.opt_state, state.params,
                                   mask_update=mask_update)
    params = optax.apply_updates(state.params, updates)
    new_state = state.replace(params=params, batch_stats=batch_stats,
                              opt_state=opt_state)
    if on_nonfinite == 'skip':
      new_state = jax.tree.map(lambda new, old: jnp.where(finite, new, old),
                               new_state, state)
      # The sparse schedule counts every step, skipped or not.
      new_state = new_state.replace(opt_state=_set_sparse_step(
          new_state.opt_state, rigl_jax.get_sparse_state(opt_state).step))
    sparse = rigl_jax.get_sparse_state(new_state.opt_state)
    metrics = {'loss': loss, 'accuracy': acc, 'learning_rate': lr_fn(state.step),
               'drop_fraction': sparse.drop_fraction,
               'mask_churn': sparse.mask_churn, 'finite': finite}
    return new_state.replace(step=state.step + 1), metrics

  if state_sharding is None:
    return jax.jit(train_step, donate_argnums=(0,),
                   static_argnums=(2,))
  return jax.jit(train_step, donate_argnums=(0,),
                 static_argnums=(2,),
                 in_shardings=(state_sharding, batch_sharding),
                 out_shardings=(state_sharding, None))


def _set_sparse_step(opt_state: Any, step: jax.Array) -> Any:
  def visit(x):
    if isinstance(x, rigl_jax.SparseState):
      return x._replace(step=step)
    return x
  return jax.tree.map(visit, opt_state,
                      is_leaf=lambda x: isinstance(x, rigl_jax.SparseState))


def make_eval_step(model: nn.Module, kind: str, num_classes: int,
                   state_sharding: Any = None,
                   batch_sharding: Any = None) -> Callable:
  """The jitted eval step: summed loss, correct count and example count."""
  inputs_key = 'image' if kind == 'image' else 'inputs'

  def eval_step(state: TrainState, batch):
    variables = {'params': state.params}
    if state.batch_stats is not None:
      variables['batch_stats'] = state.batch_stats
    logits = model.apply(variables, batch[inputs_key], train=False)
    loss, correct = loss_and_metrics(logits, batch, kind, num_classes, 0.0)
    w = batch['mask']
    return {'loss': jnp.sum(loss * w), 'correct': jnp.sum(correct * w),
            'count': jnp.sum(w)}

  if state_sharding is None:
    return jax.jit(eval_step)
  return jax.jit(eval_step, in_shardings=(state_sharding, batch_sharding))
