"""How long a run is and when its masks stop changing: the one place for it.

The training loop (`train`), the ticket-search drivers and the FLOPs report
(`rigl_jax.analysis.model_flops`) all take the number of steps and the
sparse ``end_step`` from here.
"""

from __future__ import annotations

import math
from typing import Any

# RigL stops updating masks at 75% of training (Evci et al. 2020, Sec. 4.1).
DEFAULT_END_FRACTION = 0.75


def steps_1x(config: Any, num_train: int) -> int:
  """Steps of the 1x run: ``config.num_train_steps`` or epochs x steps per
  epoch (``num_train // batch_size``, at least 1).

  Example:
    >>> import ml_collections
    >>> c = ml_collections.ConfigDict({'num_train_steps': 0, 'num_epochs': 2,
    ...     'data': {'batch_size': 100}})
    >>> steps_1x(c, 1050)
    20
  """
  if config.get('num_train_steps'):
    return int(config.num_train_steps)
  steps_per_epoch = max(1, num_train // config.data.batch_size)
  return int(math.ceil(config.num_epochs * steps_per_epoch))


def num_train_steps(config: Any, num_train: int) -> int:
  """Total steps: `steps_1x` times ``config.training_multiplier`` (the
  paper's 1x/2x/5x runs), at least 1."""
  return max(1, int(round(steps_1x(config, num_train) *
                          config.get('training_multiplier', 1.0))))


def end_step(sparsity: Any, total_steps: int) -> int:
  """The last mask-update step: ``sparsity.end_step``, or ``end_fraction``
  (default 0.75) of ``total_steps``, after ``begin_step``."""
  if sparsity.get('end_step') is not None:
    return int(sparsity.end_step)
  fraction = sparsity.get('end_fraction', DEFAULT_END_FRACTION)
  return max(int(sparsity.get('begin_step', 0)) + 1,
             int(fraction * total_steps))
