"""Ticket-search drivers: Continuous Sparsification and IMP with rewinding.

``run(config, workdir)`` dispatches on ``config.ticket_search`` (``'cs'`` or
``'imp'``). Both drivers reuse the experiment system's pieces (`builders.build`,
`builders.create_train_state`, `train.make_train_step`, `train.make_eval_step`,
`train.evaluate`, the data streams) and train every ticket with the same
Static sparse path as any other run: ``rigl_jax.sparsify(inner, 'static',
init_masks=masks)``.

Rewinding to step k restores the whole iterate saved at step k of the first
training run: weights, batch-norm statistics, optimizer state (momentum and
the learning-rate schedule's count), the step counter (hence the data
stream) and the rng; the new masks are then applied. k = 0 is the original
lottery-ticket procedure.

Each driver writes ``<workdir>/results.json`` after every round (with
``"complete": false`` until the end); see `run_imp` and `run_cs`.

One driver per method: `imp_driver` (IMP), `cs_driver` (CS); `common` holds
what they share (config sections, `prepare`, `snapshot`, `rewind`,
`train_to`).
"""

from __future__ import annotations

from typing import Any

import ml_collections

from rigl_jax.experiment.ticket_search.common import CONFIG_SECTIONS
from rigl_jax.experiment.ticket_search.common import DEFAULTS
from rigl_jax.experiment.ticket_search.common import prepare
from rigl_jax.experiment.ticket_search.common import rewind
from rigl_jax.experiment.ticket_search.common import Setup
from rigl_jax.experiment.ticket_search.common import snapshot
from rigl_jax.experiment.ticket_search.common import TICKET_SEARCHES
from rigl_jax.experiment.ticket_search.common import train_to
from rigl_jax.experiment.ticket_search.cs_driver import make_search_step
from rigl_jax.experiment.ticket_search.cs_driver import run_cs
from rigl_jax.experiment.ticket_search.cs_driver import SearchState
from rigl_jax.experiment.ticket_search.imp_driver import run_imp
# The core rules the drivers use (tests patch them here).
from rigl_jax.tickets import cs
from rigl_jax.tickets import imp


def run(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Runs the ticket search named by ``config.ticket_search``.

  Raises:
    ValueError: for an unknown ``ticket_search`` (naming the valid choices)
      or a bad config value.
  """
  kind = config.get('ticket_search')
  if kind == 'cs':
    return run_cs(config, workdir)
  if kind == 'imp':
    return run_imp(config, workdir)
  raise ValueError(f'unknown ticket_search {kind!r}; valid choices are '
                   f'{list(TICKET_SEARCHES)}')


__all__ = ('CONFIG_SECTIONS', 'DEFAULTS', 'SearchState', 'Setup',
           'TICKET_SEARCHES', 'cs', 'imp', 'make_search_step', 'prepare',
           'rewind', 'run', 'run_cs', 'run_imp', 'snapshot', 'train_to')
