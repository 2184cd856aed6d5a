"""Gradual magnitude pruning (Zhu & Gupta, 2017).

Starts dense (or at ``initial_sparsity``) and removes the smallest-magnitude
weights on the cubic schedule of `schedules.pruning_sparsity`; pruned weights
stay zero for good. The rule is `base.MagnitudePruning`.
"""

from rigl_jax.methods import base

SCOPES = base.MagnitudePruning.SCOPES


def pruning(pruning_scope: str = 'layer',
            pruning_initial_sparsity: float = 0.0) -> base.Method:
  """Magnitude pruning.

  Args:
    pruning_scope: ``'layer'`` prunes each layer to its own target from the
      sparsity distribution; ``'global'`` ranks all sparse weights together
      against the global target (the distribution is then not used).
    pruning_initial_sparsity: s_i of the cubic schedule.

  Returns:
    The method.
  """
  return base.MagnitudePruning(pruning_scope, pruning_initial_sparsity)
