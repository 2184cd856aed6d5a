"""A run's ``results.json``: where it is, how it is written, when it is done.

The training loop and the ticket-search drivers write it; sweeps, the
evidence runner, the export CLI and reports read it. What "finished" means
lives here once: a ``results.json`` exists, and a ticket search (which
rewrites it after every round with ``"complete": false``) has marked it
complete.
"""

from __future__ import annotations

import json
import os
from typing import Any, Optional

FILE = 'results.json'


def path(workdir: str) -> str:
  """``<workdir>/results.json``."""
  return os.path.join(workdir, FILE)


def write(workdir: str, results: dict[str, Any]) -> None:
  """Writes ``results`` atomically (a reader never sees half a file).

  Args:
    workdir: the run's workdir.
    results: JSON-serialisable (other values are written with ``str``).
  """
  tmp = path(workdir) + '.tmp'
  with open(tmp, 'w', encoding='utf-8') as f:
    json.dump(results, f, indent=2, default=str)
  os.replace(tmp, path(workdir))


def read(workdir: str) -> Optional[dict[str, Any]]:
  """The run's results, or None if it has written none yet."""
  if not os.path.exists(path(workdir)):
    return None
  with open(path(workdir), encoding='utf-8') as f:
    return json.load(f)


def finished(workdir: str) -> bool:
  """Whether the run is done (see the module docstring).

  Example:
    >>> import tempfile
    >>> d = tempfile.mkdtemp()
    >>> finished(d)
    False
    >>> write(d, {'round': 3, 'complete': False}); finished(d)
    False
    >>> write(d, {'round': 18, 'complete': True}); finished(d)
    True
  """
  res = read(workdir)
  return res is not None and bool(res.get('complete', True))
