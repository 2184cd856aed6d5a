"""Sweeps: expand a config's sweep into runs, run or print them, collect.

A config file describes its sweep next to ``get_config()``::

  def get_sweep():
    return {'sparsity.sparsity': [0.8, 0.9], 'sparsity.method': ['rigl', 'set'],
            'seed': [0, 1, 2]}

A dict is the product of its value lists; a list of such dicts is the union
of their products (e.g. one entry for the dense baseline, one for the sparse
grid). Every run gets its own workdir under ``--root``, named after its
settings (runs whose names would collide get a short hash of their
settings appended), so a sweep that is stopped and started again skips
finished runs and resumes unfinished ones from their checkpoints.

  # Run one after another on this machine:
  python experiments/sweep.py run --config configs/default.py --root /tmp/sw
  # One command per run, for a cluster or pod scheduler:
  python experiments/sweep.py print --config configs/default.py --root DIR
  # Table of every run's results.json (mean +- std over seeds):
  python experiments/sweep.py collect --root /tmp/sw

``--set key=value`` (repeatable) overrides a field in every run, e.g.
``--set num_epochs=3``; ``--sweep NAME`` picks ``get_sweep(NAME)`` when a
config file has several.
"""

from __future__ import annotations

import collections
import csv
import hashlib
import inspect
import itertools
import json
import math
import os
import re
import shlex
import subprocess
import sys
import time
from typing import Any, Optional

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:  # configs import `configs.*`, as under main.py
  sys.path.insert(0, REPO)

from rigl_jax.experiment import cli  # pylint: disable=g-import-not-at-top
from rigl_jax.experiment import results as results_lib  # pylint: disable=g-import-not-at-top

# Results fields summarised per group, in table order (those present).
METRICS = ('test_accuracy', 'test_bits_per_char', 'test_loss',
           'global_sparsity', 'wall_time_s')


def load_sweep(config: str, name: Optional[str] = None) -> Any:
  """The sweep a config file declares with ``get_sweep()``.

  Args:
    config: path of the config file (an optional ``:arg`` suffix is kept for
      ``main.py`` and ignored here).
    name: passed to ``get_sweep(name)`` if given.

  Returns:
    A dict of field -> values, or a list of them.

  Raises:
    ValueError: the file has no ``get_sweep``.
  """
  path = config.split(':', 1)[0]
  module = cli.config_module(path)
  if not hasattr(module, 'get_sweep'):
    raise ValueError(f'{path} defines no get_sweep(); add one returning '
                     "{'field': [values, ...], ...}")
  fn = module.get_sweep
  if name is not None:
    return fn(name)
  if inspect.signature(fn).parameters:
    return fn(None)
  return fn()


def expand(sweep: Any) -> list[dict[str, Any]]:
  """The runs of a sweep: one dict of field -> value per run.

  Args:
    sweep: a dict of field -> list of values (their product), or a list of
      such dicts (the union of their products, duplicates dropped).

  Returns:
    The runs, in a stable order.

  Raises:
    ValueError: for a malformed sweep.
  """
  parts = sweep if isinstance(sweep, (list, tuple)) else [sweep]
  if not parts:
    raise ValueError('the sweep is empty: get_sweep() returned '
                     f'{sweep!r}; return a dict of field -> list of values, '
                     'or a list of them')
  runs, seen = [], set()
  for part in parts:
    if not isinstance(part, dict) or not part:
      raise ValueError('a sweep is a non-empty dict of field -> list of '
                       f'values, or a list of them; got {part!r}')
    keys = list(part)
    values = []
    for k in keys:
      v = part[k]
      values.append(list(v) if isinstance(v, (list, tuple)) else [v])
      if not values[-1]:
        raise ValueError(f'the sweep gives {k!r} no values ({v!r}): it '
                         'would have no runs; list at least one value')
    for combo in itertools.product(*values):
      run = dict(zip(keys, combo))
      key = json.dumps(run, sort_keys=True, default=str)
      if key not in seen:
        seen.add(key)
        runs.append(run)
  return runs


def _fmt(value: Any) -> str:
  if isinstance(value, float):
    return f'{value:g}'
  if isinstance(value, (list, tuple)):
    return '-'.join(_fmt(v) for v in value)
  return str(value)


def run_name(run: dict[str, Any]) -> str:
  """A folder name for a run, e.g. ``method=rigl,sparsity=0.9,seed=0``."""
  parts = [f'{k.split(".")[-1]}={_fmt(v)}' for k, v in run.items()]
  return re.sub(r'[^A-Za-z0-9=,._-]', '_', ','.join(parts))


def _unique_names(runs: list[dict[str, Any]]) -> list[str]:
  """`run_name` of each run; runs whose names collide (values equal to 6
  significant digits, or differing only in characters a folder name drops)
  each get a suffix from a hash of their settings, so that no two runs
  share a workdir.

  Example:
    >>> _unique_names([{'lr': 0.1}, {'lr': 0.2}])
    ['lr=0.1', 'lr=0.2']
    >>> a, b = _unique_names([{'lr': 0.1}, {'lr': 0.1000001}])
    >>> a != b and a.startswith('lr=0.1,~') and b.startswith('lr=0.1,~')
    True
  """
  names = [run_name(run) for run in runs]
  counts = collections.Counter(names)
  return [name if counts[name] == 1 else name + ',~' + hashlib.sha1(
      json.dumps(run, sort_keys=True, default=repr).encode()).hexdigest()[:8]
          for name, run in zip(names, runs)]


def _flag_value(value: Any, nested: bool = False) -> str:
  """A ``--config.<field>=`` value; strings inside a tuple keep their quotes
  (``main.py`` reads a tuple as a Python literal)."""
  if isinstance(value, (list, tuple)):
    return '(' + ', '.join(_flag_value(v, nested=True) for v in value) + (
        ',)' if len(value) == 1 else ')')
  return repr(value) if nested and isinstance(value, str) else str(value)


def command(config: str, workdir: str, run: dict[str, Any],
            python: str = sys.executable) -> list[str]:
  """The ``main.py`` command line of one run."""
  cmd = [python, os.path.join(REPO, 'main.py'), '--config', config,
         '--workdir', workdir]
  cmd += [f'--config.{k}={_flag_value(v)}' for k, v in run.items()]
  return cmd


def _parse_sets(items: list[str]) -> dict[str, Any]:
  out = {}
  for item in items:
    if '=' not in item:
      raise ValueError(f'--set expects key=value, got {item!r}')
    k, v = item.split('=', 1)
    out[k] = v
  return out


def _check_fields(config: str, fields: list[str]) -> None:
  """Refuses swept or ``--set`` fields that the config does not declare
  (before any run starts, with the closest valid name)."""
  path = config.partition(':')[0]
  loaded = cli.load_config(config)
  for field in dict.fromkeys(fields):
    problem = cli.override_problem(loaded, field)
    if problem:
      raise ValueError(f'{problem} (in the sweep of {path} or --set)')


def plan(config: str, root: str, sweep_name: Optional[str] = None,
         sets: Optional[dict[str, Any]] = None,
         python: str = sys.executable) -> list[dict[str, Any]]:
  """Expands a config's sweep into runs with workdirs and commands, and
  writes the plan to ``<root>/sweep.json``."""
  runs = expand(load_sweep(config, sweep_name))
  _check_fields(config, [k for run in runs for k in run] + list(sets or {}))
  swept = [k for k in dict.fromkeys(k for run in runs for k in run)
           if k in (sets or {})]
  if swept:
    raise ValueError(f'--set {swept[0]} overrides a field the sweep varies '
                     f'(its runs would all get {sets[swept[0]]!r} but keep '
                     'names saying otherwise); drop it from --set, or pick a '
                     'sweep without it')
  path, sep, arg = config.partition(':')
  config = os.path.abspath(path) + sep + arg
  os.makedirs(root, exist_ok=True)
  planned = []
  names = _unique_names(runs)
  for run, name in zip(runs, names):
    workdir = os.path.join(os.path.abspath(root), name)
    settings = dict(run, **(sets or {}))
    planned.append({'name': name, 'settings': run,
                    'workdir': workdir,
                    'command': command(config, workdir, settings, python)})
  with open(os.path.join(root, 'sweep.json'), 'w', encoding='utf-8') as f:
    json.dump({'config': config, 'sets': sets or {}, 'runs': planned}, f,
              indent=2, default=str)
  return planned


def _last_line(log: str) -> str:
  """The last non-empty line of a run's log (its error, for a failed run)."""
  with open(log, encoding='utf-8', errors='replace') as f:
    lines = [l.strip() for l in f if l.strip()]
  return lines[-1] if lines else 'no output'


def run_all(planned: list[dict[str, Any]]) -> list[str]:
  """Runs the planned runs one after another, skipping finished ones.

  Returns:
    Names of the runs that failed (their log is ``<workdir>/sweep.log``).
  """
  failed = []
  for i, run in enumerate(planned):
    if results_lib.finished(run['workdir']):
      print(f'[{i + 1}/{len(planned)}] {run["name"]}: done already')
      continue
    os.makedirs(run['workdir'], exist_ok=True)
    t = time.time()
    with open(os.path.join(run['workdir'], 'sweep.log'), 'a',
              encoding='utf-8') as log:
      proc = subprocess.run(run['command'], stdout=log,
                            stderr=subprocess.STDOUT, cwd=REPO, check=False)
    status = 'ok' if proc.returncode == 0 else f'FAILED ({proc.returncode})'
    why = ('' if proc.returncode == 0 else ': ' + _last_line(
        os.path.join(run['workdir'], 'sweep.log')))
    print(f'[{i + 1}/{len(planned)}] {run["name"]}: {status} in '
          f'{time.time() - t:.0f} s{why}', flush=True)
    if proc.returncode:
      failed.append(run['name'])
  return failed


def _get(d: dict[str, Any], dotted: str) -> Any:
  for part in dotted.split('.'):
    if not isinstance(d, dict) or part not in d:
      return None
    d = d[part]
  return d


def _mean_std(xs: list[float]) -> tuple[float, float]:
  m = sum(xs) / len(xs)
  if len(xs) < 2:
    return m, 0.0
  return m, math.sqrt(sum((x - m) ** 2 for x in xs) / (len(xs) - 1))


def collect(root: str, group_by: Optional[list[str]] = None,
            seed_field: str = 'seed') -> tuple[list[str], list[dict]]:
  """Groups every run's ``results.json`` under ``root`` (over seeds).

  Args:
    root: the sweep root (``sweep.json`` there names the swept fields).
    group_by: fields to group by; default: the swept fields but the seed.
    seed_field: the field averaged over.

  Returns:
    ``(columns, rows)``: per group, the group's field values, the number of
    runs ``n``, and ``<metric>_mean`` / ``<metric>_std`` for each metric.
  """
  with open(os.path.join(root, 'sweep.json'), encoding='utf-8') as f:
    planned = json.load(f)['runs']
  if group_by is None:
    group_by = []
    for run in planned:
      group_by += [k for k in run['settings']
                   if k != seed_field and k not in group_by]
  groups: dict[tuple, list[dict]] = {}
  unfinished = []
  for run in planned:
    res = results_lib.read(run['workdir'])
    if res is None:
      continue
    if not results_lib.finished(run['workdir']):
      unfinished.append(run['name'])  # a ticket search part-way through
      continue
    key = tuple(_fmt(_get(res['config'], g)) for g in group_by)
    groups.setdefault(key, []).append(res)
  metrics = [m for m in METRICS
             if any(m in r for rs in groups.values() for r in rs)]
  rows = []
  for key, results in groups.items():
    row = dict(zip(group_by, key))
    row['n'] = len(results)
    for m in metrics:
      vals = [float(r[m]) for r in results if m in r]
      row[f'{m}_mean'], row[f'{m}_std'] = _mean_std(vals)
    rows.append(row)
  columns = group_by + ['n'] + [f'{m}_{s}' for m in metrics
                                for s in ('mean', 'std')]
  if unfinished:
    print(f'not collected, unfinished: {", ".join(unfinished)}',
          file=sys.stderr)
  return columns, rows


def write_tables(root: str, columns: list[str], rows: list[dict],
                 stem: str = 'results') -> tuple[str, str]:
  """Writes ``<root>/<stem>.csv`` and ``<root>/<stem>.md``; returns paths."""
  csv_path = os.path.join(root, f'{stem}.csv')
  with open(csv_path, 'w', newline='', encoding='utf-8') as f:
    w = csv.DictWriter(f, fieldnames=columns)
    w.writeheader()
    w.writerows(rows)
  keys = [c for c in columns if not c.endswith(('_mean', '_std'))]
  metrics = [c[:-5] for c in columns if c.endswith('_mean')]
  lines = ['| ' + ' | '.join(keys + metrics) + ' |',
           '|' + '---|' * (len(keys) + len(metrics))]
  for row in rows:
    cells = [str(row[k]) for k in keys]
    for m in metrics:
      mean, std = row[f'{m}_mean'], row[f'{m}_std']
      if m == 'test_accuracy':
        cells.append(f'{100 * mean:.2f} ± {100 * std:.2f}')
      elif m == 'wall_time_s':
        cells.append(f'{mean:.0f}')
      else:
        cells.append(f'{mean:.4f} ± {std:.4f}')
    lines.append('| ' + ' | '.join(cells) + ' |')
  md_path = os.path.join(root, f'{stem}.md')
  with open(md_path, 'w', encoding='utf-8') as f:
    f.write('\n'.join(lines) + '\n')
  return csv_path, md_path


def main(argv: Optional[list[str]] = None) -> int:
  parser = cli.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('action', choices=('run', 'print', 'collect'))
  parser.add_argument('--config', help='config file declaring get_sweep()')
  parser.add_argument('--root', required=True, help='one folder per run here')
  parser.add_argument('--sweep', default=None, help='get_sweep(NAME)')
  parser.add_argument('--set', action='append', default=[],
                      metavar='KEY=VALUE', help='override in every run')
  parser.add_argument('--group_by', default=None,
                      help='comma-separated fields (collect)')
  args = parser.parse_args(argv)
  try:
    if args.action == 'collect':
      columns, rows = collect(
          args.root, args.group_by.split(',') if args.group_by else None)
      paths = write_tables(args.root, columns, rows)
      print(open(paths[1], encoding='utf-8').read(), end='')
      print(f'wrote {paths[0]} and {paths[1]}')
      return 0
    if not args.config:
      raise ValueError(f'{args.action} needs --config')
    planned = plan(args.config, args.root, args.sweep, _parse_sets(args.set),
                   python='python' if args.action == 'print' else
                   sys.executable)
  except (ValueError, OSError) as e:
    print(f'error: {e}', file=sys.stderr)
    return 2
  if args.action == 'print':
    for run in planned:
      print(shlex.join(run['command']))
    return 0
  failed = run_all(planned)
  columns, rows = collect(args.root)
  paths = write_tables(args.root, columns, rows)
  print(f'wrote {paths[0]} and {paths[1]}')
  if failed:
    print(f'error: {len(failed)} run(s) failed: {", ".join(failed)}',
          file=sys.stderr)
    return 1
  return 0


if __name__ == '__main__':
  sys.exit(main())
