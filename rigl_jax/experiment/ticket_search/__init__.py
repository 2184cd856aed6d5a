"""Ticket-search drivers: Continuous Sparsification and IMP with rewinding.

``run(config, workdir)`` dispatches on ``config.ticket_search`` (``'cs'`` or
``'imp'``). Both drivers reuse the experiment system's pieces
(`builders.build`, `builders.create_train_state`,
`train_step.make_train_step`, `train_step.make_eval_step`,
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

One driver per method: `imp_driver` (IMP), `cs_driver` (CS); `schema` holds
their config sections, `common` what else they share (`prepare`,
`snapshot`, `rewind`, `train_to`).
"""

from __future__ import annotations

import importlib
from typing import Any

import ml_collections

# The config sections (light: `main.py` checks a config with them before
# the drivers load) and the core rules the drivers use (tests patch them
# here).
from rigl_jax.experiment.ticket_search.schema import CONFIG_SECTIONS
from rigl_jax.experiment.ticket_search.schema import DEFAULTS
from rigl_jax.experiment.ticket_search.schema import TICKET_SEARCHES
from rigl_jax.tickets import cs
from rigl_jax.tickets import imp

# The drivers and what they share import the training loop (and, through
# clu, TensorFlow): loaded on first use (PEP 562).
_LAZY = {
    'Setup': 'common', 'prepare': 'common', 'rewind': 'common',
    'snapshot': 'common', 'train_to': 'common',
    'SearchState': 'cs_driver', 'make_search_step': 'cs_driver',
    'run_cs': 'cs_driver', 'run_imp': 'imp_driver',
}


def __getattr__(name: str) -> Any:
  if name in _LAZY:
    module = importlib.import_module(f'{__name__}.{_LAZY[name]}')
    return getattr(module, name)
  raise AttributeError(f'module {__name__!r} has no attribute {name!r}')


def run(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Runs the ticket search named by ``config.ticket_search``.

  Raises:
    ValueError: for an unknown ``ticket_search`` (naming the valid choices)
      or a bad config value.
  """
  kind = config.get('ticket_search')
  if kind == 'cs':
    return __getattr__('run_cs')(config, workdir)
  if kind == 'imp':
    return __getattr__('run_imp')(config, workdir)
  raise ValueError(f'unknown ticket_search {kind!r}; valid choices are '
                   f'{list(TICKET_SEARCHES)}')


__all__ = ('CONFIG_SECTIONS', 'DEFAULTS', 'SearchState', 'Setup',
           'TICKET_SEARCHES', 'cs', 'imp', 'make_search_step', 'prepare',
           'rewind', 'run', 'run_cs', 'run_imp', 'snapshot', 'train_to')
