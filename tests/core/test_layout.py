"""The layering of the package: imports only go down.

Every import statement of every module (function-level ones included) is
read with `ast` and checked against the rules of the README's "Layout"
section, so a new import that reaches up a layer fails here.
"""

import ast
import os
import subprocess
import sys

import pytest

from tests import helpers

PACKAGE = os.path.join(helpers.REPO, 'rigl_jax')
STDLIB = set(sys.stdlib_module_names) | {'__future__'}

# What each part may import besides the standard library: third-party
# top-level packages, and parts of rigl_jax (by dotted prefix).
CORE = {'jax', 'jaxlib', 'optax', 'numpy'}
RULES = {
    # The core: jax, optax and numpy alone.
    'rigl_jax': (CORE, ('rigl_jax',)),
    # Counting rules: no flax, no experiment system.
    'rigl_jax.analysis.flops': (CORE, ('rigl_jax',)),
    # Tracing Flax models and reporting a config's FLOPs.
    'rigl_jax.analysis.model_flops': (
        CORE | {'flax', 'absl', 'ml_collections'},
        ('rigl_jax', 'rigl_jax.analysis', 'rigl_jax.experiment')),
    'rigl_jax.analysis': (set(), ()),  # the package: a docstring
    'rigl_jax.analysis.__main__': (set(), ('rigl_jax.analysis',)),
    # The file format: numpy (ml_dtypes for bfloat16 names).
    'rigl_jax.deploy.export': ({'numpy', 'ml_dtypes'}, ()),
    'rigl_jax.deploy.condensed': ({'numpy', 'numba'}, ()),
    'rigl_jax.deploy.sparse_inference': (
        {'jax', 'numpy', 'scipy'}, ('rigl_jax.deploy.export',
                                    'rigl_jax.deploy.condensed')),
    # The command line on top may use the experiment system.
    'rigl_jax.deploy.cli': (CORE | {'ml_collections'},
                            ('rigl_jax', 'rigl_jax.deploy',
                             'rigl_jax.experiment')),
    'rigl_jax.deploy': (set(), ()),  # the package: a docstring
    'rigl_jax.deploy.__main__': (set(), ('rigl_jax.deploy',)),
    # The experiment system: anything it needs, but not deployment or
    # analysis (they sit on top of it).
    'rigl_jax.experiment': (None, ('rigl_jax', 'rigl_jax.experiment')),
}
UPPER = ('rigl_jax.experiment', 'rigl_jax.deploy', 'rigl_jax.analysis')


def _modules():
  for root, _, files in os.walk(PACKAGE):
    for name in files:
      if name.endswith('.py'):
        path = os.path.join(root, name)
        rel = os.path.relpath(path, helpers.REPO)[:-3].replace(os.sep, '.')
        yield rel.removesuffix('.__init__'), path


def _imports(path):
  """Dotted names of everything ``path`` imports, at any depth."""
  with open(path, encoding='utf-8') as f:
    tree = ast.parse(f.read(), path)
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      for alias in node.names:
        yield alias.name
    elif isinstance(node, ast.ImportFrom) and node.level == 0:
      for alias in node.names:
        # `from rigl_jax.experiment import train` names a module.
        yield f'{node.module}.{alias.name}'


def _rule(module):
  best = max((k for k in RULES if module == k or module.startswith(k + '.')),
             key=len)
  if best == 'rigl_jax' and module.startswith(UPPER):
    raise AssertionError(f'no layering rule for {module}')
  return RULES[best]


def _allowed(module, name):
  """Whether ``module`` may import ``name``."""
  third_party, internal = _rule(module)
  top = name.split('.')[0]
  if top in STDLIB:
    return True
  if top != 'rigl_jax':
    return third_party is None or top in third_party
  under = lambda prefixes: any(name == p or name.startswith(p + '.')
                               for p in prefixes)
  if name.startswith(UPPER):  # only where the rule names that package
    return under(p for p in internal if p.startswith(UPPER))
  return under(internal)


def test_every_module_has_a_rule():
  modules = dict(_modules())
  assert 'rigl_jax.transform' in modules and 'rigl_jax.deploy.export' in modules
  for module in modules:
    _rule(module)


def test_imports_only_go_down():
  bad = [f'{module} imports {name}'
         for module, path in _modules()
         for name in _imports(path) if not _allowed(module, name)]
  assert not bad, '\n'.join(bad)


@pytest.mark.parametrize('module,name,ok', [
    ('rigl_jax.transform', 'flax.linen', False),
    ('rigl_jax.transform', 'rigl_jax.experiment.train', False),
    ('rigl_jax.methods.rigl', 'rigl_jax.selection', True),
    ('rigl_jax.analysis.flops', 'flax.linen', False),
    ('rigl_jax.analysis.flops', 'rigl_jax.distributions', True),
    ('rigl_jax.deploy.export', 'jax', False),
    ('rigl_jax.deploy.export', 'rigl_jax.experiment.train', False),
    ('rigl_jax.deploy.cli', 'rigl_jax.experiment.train', True),
    ('rigl_jax.experiment.train', 'rigl_jax.deploy.export', False),
    ('rigl_jax.experiment.train', 'flax', True),
])
def test_the_rules_catch_what_they_should(module, name, ok):
  assert _allowed(module, name) == ok


def test_core_import_loads_no_experiment_library():
  code = ('import sys, rigl_jax, rigl_jax.tickets, rigl_jax.cpu_allocator, '
          'rigl_jax.analysis.flops, rigl_jax.deploy.export; '
          "print(sorted(m for m in ('flax', 'ml_collections', 'tensorflow', "
          "'orbax', 'clu', 'scipy') if m in sys.modules))")
  out = subprocess.run([sys.executable, '-c', code], capture_output=True,
                       text=True, cwd=helpers.REPO, check=True).stdout
  assert out.strip() == '[]'
