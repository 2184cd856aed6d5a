"""Gradual magnitude pruning (Zhu & Gupta, 2017).

Starts dense (or at ``initial_sparsity``) and removes the smallest-magnitude
weights on the cubic schedule of `schedules.pruning_sparsity`; pruned weights
stay zero for good.
"""

from rigl_jax.methods import base

SCOPES = ('layer', 'global')


def pruning(scope: str = 'layer',
            initial_sparsity: float = 0.0) -> base.MaskMethod:
  """Magnitude pruning.

  Args:
    scope: ``'layer'`` prunes each leaf to its own target from the sparsity
      distribution; ``'global'`` ranks all sparse weights together against
      the global target (the distribution is then not used).
    initial_sparsity: s_i of the cubic schedule.

  Returns:
    The method.
  """
  if scope not in SCOPES:
    raise ValueError(f'unknown pruning scope {scope!r}; valid choices are '
                     f'{list(SCOPES)}')
  if not 0.0 <= initial_sparsity < 1.0:
    raise ValueError('pruning initial_sparsity must be in [0, 1); got '
                     f'{initial_sparsity}')
  return base.MaskMethod(name='pruning', kind='pruning',
                         global_scope=scope == 'global',
                         initial_sparsity=float(initial_sparsity))
