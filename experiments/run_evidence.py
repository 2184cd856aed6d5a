"""Runs a sweep in one process: `experiments/sweep.py run` without the
per-run start-up.

`sweep.py run` starts ``main.py`` once per run; on a small CPU the imports
cost seconds per run. This driver plans the sweep with the same
`sweep.plan` (same run names, workdirs and ``sweep.json``), builds each
run's config exactly as ``main.py`` would from the planned
``--config.<field>=<value>`` overrides, and calls
`rigl_jax.experiment.train.train_and_evaluate` for each unfinished run in turn, so
``results.json`` and ``metrics.jsonl`` are those ``main.py`` writes (a
config with ``ticket_search`` goes to `rigl_jax.experiment.ticket_search.run`, as in
``main.py``). Runs with a ``results.json`` (a complete one, for ticket
searches) are skipped, so the driver can be stopped and
started again (SIGTERM stops it after saving the current run's checkpoint,
exit code 143); a run that fails is reported and the next one starts.

By default each finished run's checkpoints and TensorBoard events are
deleted (``--keep_checkpoints`` keeps them): a results tree then holds only
``results.json`` and ``metrics.jsonl`` per run, small enough to commit.
XLA programs are cached on disk (``--compile_cache``), which saves the
compile of programs that runs share (e.g. the same method at another seed).

  python experiments/run_evidence.py \
      --config configs/evidence_fashion_mnist.py \
      --root experiments/results/fashion_mnist --sweep grid
"""

from __future__ import annotations

import argparse
import ast
import glob
import os
import shutil
import sys
import time
import traceback
from typing import Any, Optional

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
  sys.path.insert(0, REPO)

from experiments import sweep  # pylint: disable=g-import-not-at-top
from rigl_jax.experiment.cli import load_config  # pylint: disable=g-import-not-at-top
from rigl_jax.experiment import results as results_lib  # pylint: disable=g-import-not-at-top


def _coerce(old: Any, value: Any) -> Any:
  """``value`` (a sweep value or a ``--set`` string) typed like ``old``."""
  if isinstance(value, str) and not isinstance(old, str):
    try:
      value = ast.literal_eval(value)
    except (ValueError, SyntaxError):
      pass
  if isinstance(old, bool) or isinstance(value, bool):
    return value
  if isinstance(old, float) and isinstance(value, int):
    return float(value)
  if isinstance(old, tuple) and isinstance(value, list):
    return tuple(value)
  return value


def apply_overrides(config: Any, settings: dict[str, Any]) -> Any:
  """Sets each dotted field of ``settings`` in ``config`` (in place)."""
  for dotted, value in settings.items():
    *parents, leaf = dotted.split('.')
    node = config
    for p in parents:
      node = node[p]
    old = node.get(leaf) if hasattr(node, 'get') else None
    node[leaf] = _coerce(old, value)
  return config


def clean_workdir(workdir: str) -> None:
  """Deletes checkpoints and TensorBoard events of a finished run."""
  shutil.rmtree(os.path.join(workdir, 'checkpoints'), ignore_errors=True)
  for path in glob.glob(os.path.join(workdir, 'events.out.tfevents.*')):
    os.remove(path)


# What "finished" means is the experiment system's (sweep.py uses it too).
finished = results_lib.finished


def run_planned(config_file: str, planned: list[dict[str, Any]],
                keep_checkpoints: bool = False) -> list[str]:
  """Trains every planned run without a ``results.json``, in order.

  Returns:
    Names of the runs that failed.
  """
  from rigl_jax.experiment import preemption  # pylint: disable=g-import-not-at-top
  from rigl_jax.experiment import train  # pylint: disable=g-import-not-at-top
  from rigl_jax.experiment import ticket_search as search  # pylint: disable=g-import-not-at-top
  failed = []
  t_all = time.time()
  done = 0
  for i, run in enumerate(planned):
    tag = f'[{i + 1}/{len(planned)}] {run["name"]}'
    if finished(run['workdir']):
      print(f'{tag}: done already', flush=True)
      if not keep_checkpoints:
        clean_workdir(run['workdir'])
      continue
    config = apply_overrides(load_config(config_file), run['overrides'])
    config.lock()
    t = time.time()
    try:
      if config.get('ticket_search') is not None:
        results = search.run(config, run['workdir'])
      else:
        results = train.train_and_evaluate(config, run['workdir'])
    except preemption.Preempted:  # SIGTERM: a checkpoint was saved; stop here
      print(f'{tag}: stopped by SIGTERM (resumes on the next start)',
            flush=True)
      raise
    except Exception:  # pylint: disable=broad-except
      failed.append(run['name'])
      print(f'{tag}: FAILED\n{traceback.format_exc()}', flush=True)
      continue
    done += 1
    metric = ('test_bits_per_char' if 'test_bits_per_char' in results
              else 'test_accuracy')
    print(f'{tag}: {metric}={results[metric]:.4f} in {time.time() - t:.0f} s '
          f'(elapsed {time.time() - t_all:.0f} s)', flush=True)
    if not keep_checkpoints:
      clean_workdir(run['workdir'])
  return failed


def main(argv: Optional[list[str]] = None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--config', required=True,
                      help='config file declaring get_sweep()')
  parser.add_argument('--root', required=True, help='one folder per run here')
  parser.add_argument('--sweep', default=None, help='get_sweep(NAME)')
  parser.add_argument('--set', action='append', default=[],
                      metavar='KEY=VALUE', help='override in every run')
  parser.add_argument('--keep_checkpoints', action='store_true')
  parser.add_argument('--compile_cache',
                      default=os.path.join('/tmp', 'rigl_jax_compile_cache'),
                      help="XLA compilation cache folder ('' for none)")
  parser.add_argument('--verbose', action='store_true',
                      help='absl INFO logging (default: WARNING)')
  args = parser.parse_args(argv)
  try:
    sets = sweep._parse_sets(args.set)  # pylint: disable=protected-access
    planned = sweep.plan(args.config, args.root, args.sweep, sets)
  except (ValueError, OSError) as e:
    print(f'error: {e}', file=sys.stderr)
    return 2
  for run in planned:
    run['overrides'] = dict(run['settings'], **sets)
  import jax  # pylint: disable=g-import-not-at-top
  from absl import logging  # pylint: disable=g-import-not-at-top
  if not args.verbose:
    logging.set_verbosity(logging.WARNING)
  if args.compile_cache:
    jax.config.update('jax_compilation_cache_dir', args.compile_cache)
    jax.config.update('jax_persistent_cache_min_compile_time_secs', 0.0)
    jax.config.update('jax_persistent_cache_min_entry_size_bytes', -1)
  from rigl_jax.experiment import preemption  # pylint: disable=g-import-not-at-top
  try:
    failed = run_planned(args.config, planned, args.keep_checkpoints)
  except preemption.Preempted:
    return 143
  if failed:
    print(f'error: {len(failed)} run(s) failed: {", ".join(failed)}',
          file=sys.stderr)
    return 1
  return 0


if __name__ == '__main__':
  sys.exit(main())
