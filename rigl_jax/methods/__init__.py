"""Sparse-training methods: each is a small scoring rule (see `base`)."""

from rigl_jax.methods.base import MaskMethod
from rigl_jax.methods.dense import dense
from rigl_jax.methods.pruning import pruning
from rigl_jax.methods.rigl import rigl
from rigl_jax.methods.set import set_method
from rigl_jax.methods.snfs import snfs
from rigl_jax.methods.static import static

METHODS = ('dense', 'static', 'set', 'snfs', 'rigl', 'pruning')


def get_method(name: str, *, snfs_momentum: float = 0.9,
               snfs_redistribution: bool = False, pruning_scope: str = 'layer',
               pruning_initial_sparsity: float = 0.0) -> MaskMethod:
  """Builds a method by name.

  Raises:
    ValueError: for an unknown name (the message lists the valid ones).
  """
  if name == 'dense':
    return dense()
  if name == 'static':
    return static()
  if name == 'set':
    return set_method()
  if name == 'rigl':
    return rigl()
  if name == 'snfs':
    return snfs(snfs_momentum, snfs_redistribution)
  if name == 'pruning':
    return pruning(pruning_scope, pruning_initial_sparsity)
  raise ValueError(f'unknown sparse method {name!r}; valid choices are '
                   f'{list(METHODS)}')
