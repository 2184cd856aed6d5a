"""Runs the docstring examples of rigl_jax's modules (shared by the layers'
doctest tests)."""

import doctest
import importlib
import pkgutil

import rigl_jax

UPPER = ('rigl_jax.experiment', 'rigl_jax.deploy', 'rigl_jax.analysis')
# Modules above the core that need numpy alone (or the core).
CORE_ONLY_UPPER = ('rigl_jax.analysis.flops', 'rigl_jax.deploy.export')


def modules(core: bool) -> list[str]:
  """The package's modules: the core's (``core=True``) or the rest."""
  names = [m.name for m in pkgutil.walk_packages(rigl_jax.__path__,
                                                 'rigl_jax.')
           if not m.name.endswith('__main__')]
  is_core = lambda n: not n.startswith(UPPER) or n in CORE_ONLY_UPPER
  return sorted(n for n in names if is_core(n) == core)


def run(name: str) -> None:
  """Runs ``name``'s docstring examples; fails on the first wrong one."""
  result = doctest.testmod(importlib.import_module(name),
                           optionflags=doctest.ELLIPSIS, report=True)
  assert result.failed == 0, f'{result.failed} example(s) failed in {name}'
