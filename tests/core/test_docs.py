"""The documentation names what the code has (no build needed)."""

import ast
import os
import re

import rigl_jax
from rigl_jax import methods

DOCS = os.path.join(os.path.dirname(__file__), '..', '..', 'docs')


def _read(*parts):
  with open(os.path.join(DOCS, *parts), encoding='utf-8') as f:
    return f.read()


def test_method_page_has_every_method_and_hyperparameter():
  page = _read('methods.md')
  headings = set(re.findall(r'^## .*\(`(\w+)`\)$', page, re.M))
  assert headings == set(methods.names())
  for name in methods.names():
    section = page.split(f'(`{name}`)', 1)[1].split('\n## ', 1)[0]
    for field, default in methods.hyperparameters(name).items():
      # Each field in its method's section, with its default.
      found = re.search(rf'`{field}` = `([^`]+)`', section)
      assert found, f'{name}: {field} is not on docs/methods.md'
      assert ast.literal_eval(found.group(1)) == default, (name, field)


def test_api_reference_lists_every_public_core_name():
  page = _read('api', 'core.rst')
  documented = set(re.findall(r'rigl_jax\.(\w+)', page))
  skip = {'CONFIG_FIELDS', 'DISTRIBUTIONS', 'METHODS', 'methods', 'set',
          'register_method'}  # constants, the module, aliases
  missing = set(rigl_jax.__all__) - documented - skip
  assert not missing, f'not in docs/api/core.rst: {sorted(missing)}'


def test_tutorial_pages_include_their_scripts():
  index = _read('tutorials', 'index.md')
  scripts = sorted(f[:-3] for f in os.listdir(os.path.join(DOCS, 'tutorials'))
                   if f.endswith('.py') and f != 'run_all.py')
  for name in scripts:
    assert name in index
    assert f'literalinclude}} {name}.py' in _read('tutorials', f'{name}.md')


def test_every_python_block_in_the_docs_parses():
  """Code blocks are pasted by readers: each ```python block (README and
  every docs page) must be valid Python (comments kept as comments)."""
  pages = [os.path.join(DOCS, '..', 'README.md')] + [
      os.path.join(root, f) for root, _, files in os.walk(DOCS)
      for f in files if f.endswith('.md') and '_build' not in root]
  assert len(pages) > 5
  broken = []
  for page in pages:
    with open(page, encoding='utf-8') as f:
      text = f.read()
    for block in re.finditer(r'```python\n(.*?)```', text, re.S):
      try:
        ast.parse(block.group(1))
      except SyntaxError as e:
        line = text[:block.start()].count('\n') + 1 + e.lineno
        broken.append(f'{os.path.relpath(page, DOCS)}:{line}: {e.msg}')
  assert not broken, broken
