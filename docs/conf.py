"""Sphinx configuration: the API reference from the docstrings (autodoc +
napoleon for the Google style, as optax and flax do), guides and tutorials
in Markdown (MyST).

Build: ``sphinx-build -W -b html docs docs/_build/html`` (the README's
command; ``.ci/run`` builds with warnings as errors).
"""

import os
import re
import sys

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), '..'))
sys.path.insert(0, ROOT)  # rigl_jax, and configs/ for the tutorials

project = 'rigl_jax'
author = 'rigl_jax authors'
copyright = '2026, rigl_jax authors'  # pylint: disable=redefined-builtin

extensions = [
    'sphinx.ext.autodoc',
    'sphinx.ext.autosummary',
    'sphinx.ext.napoleon',
    'sphinx.ext.viewcode',
    'myst_parser',
]
source_suffix = {'.rst': 'restructuredtext', '.md': 'markdown'}
exclude_patterns = ['_build']
myst_heading_anchors = 3
myst_enable_extensions = ['colon_fence']

# `name` in a docstring is a cross-reference where Sphinx finds the name
# (unresolved names render as code: no nitpicky mode).
default_role = 'py:obj'
autodoc_member_order = 'bysource'
autodoc_typehints = 'description'
autodoc_default_options = {'members': True, 'show-inheritance': False}
autosummary_generate = False
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False
napoleon_use_ivar = True  # Attributes: as fields (autodoc lists members)

html_theme = 'furo'
html_title = 'rigl_jax'
napoleon_custom_sections = [('Fields', 'params_style'),
                            ('References', 'notes_style')]

# The docstrings write math as plain text (|w|, |g * w|) and plurals as
# `Name`s; reStructuredText would read the first as substitutions and the
# second as an unterminated reference. Escape both outside ``literals``.
_LITERAL = re.compile(r'(``.+?``)')
_PLURAL = re.compile(r'(`[^`\s][^`]*`)(s\b)')


def _escape(line: str) -> str:
  stripped = line.strip()
  if (stripped.startswith(('+-', '+=', '>>>', '...')) or
      (stripped.startswith('|') and stripped.endswith('|') and
       stripped.count('|') > 2)):
    return line  # a table row or a doctest
    return line
  parts = _LITERAL.split(line)
  for i in range(0, len(parts), 2):  # outside ``...``
    parts[i] = _PLURAL.sub(r'\1\\ \2', parts[i].replace('|', r'\|'))
    if i and parts[i].startswith('s'):  # ``Name``s
      parts[i] = '\\ ' + parts[i]
  return ''.join(parts)


def _process_docstring(app, what, name, obj, options, lines):
  del app, what, name, obj, options
  lines[:] = [_escape(line) for line in lines]


def setup(app):
  app.connect('autodoc-process-docstring', _process_docstring)
