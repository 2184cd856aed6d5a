"""When masks change: update steps, drop-fraction decay, the pruning schedule.

All functions take a traced step and are jit-friendly.
"""

from __future__ import annotations

import re
from typing import NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np

DROP_FRACTION_SCHEDULES = ('cosine', 'constant', 'exponential')


def parse_drop_fraction_schedule(name: str) -> tuple[str, float]:
  """Parses ``'cosine'``, ``'constant'``, ``'exponential'`` or ``'exponential_K'``.

  Returns:
    ``(kind, exponent)``; the exponent is 1.0 unless given as ``_K``.

  Raises:
    ValueError: for any other name.
  """
  m = re.fullmatch(r'(cosine|constant|exponential)(?:_(\d+(?:\.\d*)?|\.\d+))?',
                   str(name))
  if m is None or (m.group(2) is not None and m.group(1) != 'exponential'):
    raise ValueError(
        f'unknown drop_fraction_schedule {name!r}; valid choices are '
        f"'cosine', 'constant', 'exponential' or 'exponential_K' (K > 0)")
  return m.group(1), float(m.group(2)) if m.group(2) else 1.0


def drop_fraction(step: jax.Array, *, initial: float, schedule: str,
                  begin_step: int, end_step: int) -> jax.Array:
  """The fraction of active connections to drop at ``step``.

  - ``cosine`` (RigL, Evci et al. 2020, eq. 1):
    ``alpha / 2 * (1 + cos(pi * t / end_step))``, with t clipped to end_step.
    The reference code (`get_drop_fraction`, google-research/rigl
    rigl/sparse_optimizers_base.py:232-241) decays over ``end_step -
    begin_step`` steps counted from step 0; the two agree for
    ``begin_step = 0``, as in every configuration of the paper, and this
    follows the paper otherwise.
  - ``constant``: ``alpha``.
  - ``exponential_K`` (the reference code's annealing):
    ``alpha * (1 - (t - begin_step) / (end_step - begin_step)) ** K``.

  Args:
    step: the current step (traced int).
    initial: alpha, the drop fraction at the start.
    schedule: the schedule name.
    begin_step: first step of mask updates.
    end_step: last step of mask updates.

  Returns:
    A float32 scalar.
  """
  kind, exponent = parse_drop_fraction_schedule(schedule)
  t = jnp.asarray(step, jnp.float32)
  alpha = jnp.float32(initial)
  if kind == 'constant':
    return alpha
  if kind == 'cosine':
    frac = jnp.clip(t / end_step, 0.0, 1.0)
    return alpha * 0.5 * (1.0 + jnp.cos(jnp.pi * frac))
  frac = jnp.clip((t - begin_step) / (end_step - begin_step), 0.0, 1.0)
  return alpha * (1.0 - frac) ** exponent


def is_update_step(step: jax.Array, *, update_freq: int, begin_step: int,
                   end_step: int, include_end: bool = False) -> jax.Array:
  """True on ``begin_step, begin_step + update_freq, ...`` before ``end_step``.

  With ``begin_step=0`` the first update is at step 0, as in the reference
  code (its ``last_mask_update_step`` starts at ``-update_freq``,
  google-research/rigl rigl/sparse_optimizers_base.py:164-171).

  Args:
    step: the current step (traced int).
    update_freq: steps between two mask updates.
    begin_step: the first update step.
    end_step: updates happen at steps < end_step (Algorithm 1 of the RigL
      paper), or <= end_step with ``include_end``.
    include_end: also update at ``end_step`` itself, even off the grid (used
      by gradual pruning so that it ends exactly at the final sparsity).

  Returns:
    A bool scalar.
  """
  step = jnp.asarray(step, jnp.int32)
  on_grid = ((step - begin_step) % update_freq) == 0
  in_range = (step >= begin_step) & (step < end_step)
  if include_end:
    return (in_range & on_grid) | (step == end_step)
  return in_range & on_grid


def pruning_sparsity(step: jax.Array, *, initial_sparsity: float,
                     final_sparsity: float, begin_step: int,
                     end_step: int) -> jax.Array:
  """Gradual pruning's cubic schedule (Zhu & Gupta 2017, eq. 1).

  ``s_t = s_f + (s_i - s_f) * (1 - (t - t0) / (t1 - t0)) ** 3``, held at s_i
  before ``begin_step`` and at s_f after ``end_step``.

  Returns:
    A float32 scalar sparsity.
  """
  t = jnp.asarray(step, jnp.float32)
  frac = jnp.clip((t - begin_step) / (end_step - begin_step), 0.0, 1.0)
  return final_sparsity + (initial_sparsity - final_sparsity) * (1.0 - frac)**3


class MaskSchedule(NamedTuple):
  """When masks change, and by how much: the one schedule of a run.

  `sparsify` builds it from its arguments and exposes it as ``tx.schedule``;
  a training loop asks it whether a step changes the masks (to run a
  mask-update program only then) instead of re-deriving that from a config.

  Attributes:
    update_freq: steps between mask updates (Delta T).
    begin_step: the first mask-update step.
    end_step: masks change at steps < end_step (<= with ``include_end``);
      None: never (dense and static training).
    include_end: also update at ``end_step`` (gradual pruning ends there).
    drop_fraction: alpha, the initial fraction of active weights replaced.
    drop_fraction_schedule: see `drop_fraction`.

  Example:
    >>> from rigl_jax.schedules import MaskSchedule
    >>> s = MaskSchedule(update_freq=100, end_step=300)
    >>> [t for t in range(400) if s.is_update_step(t)]
    [0, 100, 200]
  """
  update_freq: int = 100
  begin_step: int = 0
  end_step: Optional[int] = None
  include_end: bool = False
  drop_fraction: float = 0.3
  drop_fraction_schedule: str = 'cosine'

  def is_update_step(self, step):
    """Whether the ``step``-th update (0-based) changes the masks: a Python
    bool for a host integer, a traced bool scalar otherwise."""
    if self.end_step is None:
      return False if isinstance(step, (int, np.integer)) else (
          jnp.zeros([], jnp.bool_))
    if isinstance(step, (int, np.integer)):
      step = int(step)
      on_grid = (step - self.begin_step) % self.update_freq == 0
      in_range = self.begin_step <= step < self.end_step
      return bool((in_range and on_grid) or
                  (self.include_end and step == self.end_step))
    return is_update_step(step, update_freq=self.update_freq,
                          begin_step=self.begin_step, end_step=self.end_step,
                          include_end=self.include_end)

  def drop_fraction_at(self, step) -> jax.Array:
    """The drop fraction of a mask update at ``step``."""
    return drop_fraction(step, initial=self.drop_fraction,
                         schedule=self.drop_fraction_schedule,
                         begin_step=self.begin_step, end_step=self.end_step)

  def pruning_sparsity_at(self, step, initial_sparsity: float,
                          final_sparsity: float) -> jax.Array:
    """Gradual pruning's target at ``step`` (see `pruning_sparsity`)."""
    return pruning_sparsity(step, initial_sparsity=initial_sparsity,
                            final_sparsity=final_sparsity,
                            begin_step=self.begin_step,
                            end_step=self.end_step)
