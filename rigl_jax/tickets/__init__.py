"""Lottery-ticket search: Continuous Sparsification and IMP with rewinding.

The pure pieces (jax only) are re-exported here; the drivers that train
(`run`, `run_cs`, `run_imp`) live in `rigl_jax.experiment.ticket_search`, which needs
the experiment system (`rigl_jax.experiment.train`):

  from rigl_jax.experiment import ticket_search as search
  results = search.run(config, workdir)  # config.ticket_search: 'cs' | 'imp'

Found tickets are trained with ``rigl_jax.sparsify(inner, 'static',
init_masks=masks)`` like any other fixed mask.
"""

from rigl_jax.tickets.cs import gate
from rigl_jax.tickets.cs import gated_params
from rigl_jax.tickets.cs import hard_masks
from rigl_jax.tickets.cs import init_logits
from rigl_jax.tickets.cs import penalty
from rigl_jax.tickets.cs import reset_logits
from rigl_jax.tickets.cs import scaled_params
from rigl_jax.tickets.cs import temperature
from rigl_jax.tickets.cs import ticket_scale
from rigl_jax.tickets.imp import expected_remaining
from rigl_jax.tickets.imp import num_pruned
from rigl_jax.tickets.imp import prune_remaining
from rigl_jax.tickets.imp import CONTROLS
from rigl_jax.tickets.imp import SCOPES
from rigl_jax.tickets.imp import shuffle_layerwise

__all__ = (
    'CONTROLS', 'SCOPES', 'expected_remaining', 'gate', 'gated_params',
    'hard_masks', 'init_logits', 'num_pruned', 'penalty', 'prune_remaining',
    'reset_logits', 'scaled_params', 'shuffle_layerwise', 'temperature',
    'ticket_scale',
)
