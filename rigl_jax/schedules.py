"""When masks change: update steps, drop-fraction decay, the pruning schedule.

All functions take a traced step and are jit-friendly.
"""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp

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
