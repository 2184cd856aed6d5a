"""GraNet: gradual magnitude pruning with zero-cost neuroregeneration.

*Sparse Training via Boosting Pruning Plasticity with Neuroregeneration*
(Liu, Chen, Chen, Atashgahi, Yin, Kou, Shen, Pechenizkiy, Wang, Mocanu,
NeurIPS 2021). The rules follow the authors' code (VITA-Group/GraNet,
``CIFAR/sparselearning/core.py`` at f338a24, cited as core.py:line):

* Start dense (``granet_initial_sparsity`` s_i = 0) or sparse (s_i > 0:
  random masks at the distribution's per-layer sparsities for s_i;
  core.py:256-321 samples them as Bernoulli draws, here exact counts).
* Every ``update_freq`` steps from ``begin_step`` (core.py:335-347), after
  the optimizer step:

  1. Gradual pruning, global magnitude (core.py:367-413): all sparse
     weights ranked together, pruned to Zhu & Gupta's cubic
     ``s_t = s_f + (s_i - s_f)(1 - p)^3`` with ``p`` the progress through
     the pruning window ``[begin_step, begin_step + granet_prune_fraction *
     (end_step - begin_step)]`` (the README's 80 of 160 epochs: 0.5).
  2. Neuroregeneration in every layer (core.py:537-563, 584-624): drop
     ``ceil(r_t * nnz)`` active weights of smallest magnitude, grow as many
     where the dense gradient is largest (the just-dropped positions
     included: such a weight keeps its value), so the layer's count is
     unchanged. ``r_t`` decays on a cosine from ``granet_prune_rate``
     (0.5) to 0.005 over ``[0, end_step]`` (core.py:27-36, stepped every
     iteration over the whole run).

  Regeneration goes on after the pruning window, at the final sparsity,
  until ``end_step``: the authors' code keeps regenerating to the end of
  training, so its configs set ``end_step`` to the whole run.

Where this differs from the code: the first pruning happens at
``begin_step`` (the code's at one interval later, a no-op at a dense
start); a weight pruned by the global step and regrown by the same
update's regeneration keeps its value (the code has zeroed it in between;
one dropped by the regeneration and regrown keeps it in both); sparse-start
masks hold exact counts; only global pruning (the code's
``GraNet_uniform`` variant is per layer).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from rigl_jax import mask_update
from rigl_jax import schedules
from rigl_jax import selection
from rigl_jax.methods import base

MIN_RATE = 0.005  # the cosine decay's floor (core.py:27-36, eta_min)


def death_rate(step: jax.Array, end_step: int, initial: float,
               final: float = MIN_RATE) -> jax.Array:
  """``final + (initial - final) * (1 + cos(pi * t / end_step)) / 2``.

  Example:
    >>> float(death_rate(0, 100, 0.5)), float(death_rate(100, 100, 0.5))
    (0.5, 0.004999999888241291)
  """
  t = jnp.clip(jnp.asarray(step, jnp.float32) / max(end_step, 1), 0.0, 1.0)
  return final + (initial - final) * 0.5 * (1.0 + jnp.cos(jnp.pi * t))


def ceil_count(fraction: jax.Array, nnz: jax.Array) -> jax.Array:
  """``ceil(fraction * nnz)`` as int32 (core.py:585)."""
  x = jnp.asarray(fraction, jnp.float32) * nnz.astype(jnp.float32)
  return jnp.minimum(jnp.ceil(x).astype(jnp.int32), nnz)


def prune_end(begin_step: int, end_step: int, prune_fraction: float) -> int:
  """The last step of the pruning window."""
  return begin_step + max(1, math.floor(prune_fraction *
                                        (end_step - begin_step)))


class GraNet(base.Method):
  """Gradual global magnitude pruning plus per-layer regeneration.

  Args:
    initial_sparsity: s_i (0: dense start).
    prune_rate: r_0, the regeneration's initial death rate.
    prune_fraction: the pruning window's share of ``[begin_step,
      end_step]``.
  """
  name = 'granet'
  # The pruning schedule's forward and backward passes, and the dense
  # gradient the regeneration ranks on every mask update.
  training_cost = 'pruning_schedule_dense_gradient_on_update'

  def __init__(self, initial_sparsity: float = 0.0, prune_rate: float = 0.5,
               prune_fraction: float = 0.5):
    if not 0.0 <= float(initial_sparsity) < 1.0:
      raise ValueError('granet_initial_sparsity must be in [0, 1); got '
                       f'{initial_sparsity}')
    if not 0.0 <= float(prune_rate) <= 1.0:
      raise ValueError(f'granet_prune_rate must be in [0, 1]; got '
                       f'{prune_rate}')
    if not 0.0 < float(prune_fraction) <= 1.0:
      raise ValueError('granet_prune_fraction must be in (0, 1]; got '
                       f'{prune_fraction}')
    self.initial_sparsity = float(initial_sparsity)
    self.prune_rate = float(prune_rate)
    self.prune_fraction = float(prune_fraction)

  @property
  def starts_dense(self) -> bool:  # pytype: disable=signature-mismatch
    return self.initial_sparsity == 0.0

  @property
  def initial_global_sparsity(self) -> float:
    return self.initial_sparsity

  def validate(self, *, structure, custom_sparsity) -> None:
    if structure.sparsity is not None:
      raise ValueError('granet prunes globally, which an N:M structure '
                       "forbids; use structure='unstructured'")

  def prune_end(self, schedule: schedules.MaskSchedule) -> int:
    return prune_end(schedule.begin_step, schedule.end_step,
                     self.prune_fraction)

  def update_masks(self, ctx: base.MaskContext):
    sched = ctx.schedule
    magnitudes = [jnp.abs(w) for w in ctx.stepped]
    target = schedules.pruning_sparsity(
        ctx.step, initial_sparsity=min(self.initial_sparsity, ctx.sparsity),
        final_sparsity=ctx.sparsity, begin_step=sched.begin_step,
        end_step=self.prune_end(sched))
    pruned = mask_update.prune_global(magnitudes, ctx.masks, target)
    rate = death_rate(ctx.step, sched.end_step, self.prune_rate)
    new = []
    for mag, grad, m in zip(magnitudes, ctx.grads, pruned):
      def one(mag, grad, m):
        nnz = selection.count_true(m)
        n = ceil_count(rate, nnz)
        kept = selection.top_k_mask(mag, nnz - n, valid=m)
        return kept | selection.top_k_mask(jnp.abs(grad), n, valid=~kept)
      new.append(jax.vmap(one)(mag, grad, m))
    return new, rate


def granet_method(granet_initial_sparsity: float = 0.0,
                  granet_prune_rate: float = 0.5,
                  granet_prune_fraction: float = 0.5) -> base.Method:
  """GraNet (Liu et al. 2021); see the module docstring.

  Args:
    granet_initial_sparsity: s_i: 0 starts dense, e.g. 0.5 starts from
      random masks at half the weights (the paper's sparse start).
    granet_prune_rate: the initial death rate of the regeneration (0.5).
    granet_prune_fraction: the pruning window as a fraction of the mask
      updates' span ``[begin_step, end_step]`` (0.5).

  Returns:
    The method.
  """
  return GraNet(granet_initial_sparsity, granet_prune_rate,
                granet_prune_fraction)
