"""Exporting a finished run: its checkpoint -> a compact sparse file.

``python -m rigl_jax.deploy --workdir DIR [--out FILE] [--compressed]``
restores the latest checkpoint of a run written by ``main.py`` and writes it
with `rigl_jax.deploy.export`; this is the only part of deployment that needs
the experiment system (its config, data description and train state).
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any, Optional, Sequence

import jax
import ml_collections

import rigl_jax
from rigl_jax.deploy import export as export_lib
from rigl_jax.experiment import builders
from rigl_jax.experiment import cli as cli_lib
from rigl_jax.experiment import data as data_lib
from rigl_jax.experiment import results as results_lib


def read_run_config(workdir: str) -> Any:
  """The config a run was written with (from its ``results.json``).

  Args:
    workdir: the run's workdir.

  Returns:
    An ``ml_collections.ConfigDict``.

  Raises:
    ValueError: if the workdir has no results.json with a config.
  """
  config = (results_lib.read(workdir) or {}).get('config')
  if config is None:
    raise ValueError(f'no config found in {results_lib.path(workdir)}: is '
                     f'{workdir!r} a finished run?')
  return ml_collections.ConfigDict(config)


def restore_run(workdir: str) -> tuple[Any, Any, Any]:
  """Restores the latest checkpoint of a finished run.

  Args:
    workdir: the run's workdir (``results.json`` and ``checkpoints/``).

  Returns:
    ``(state, config, info)``: the `builders.TrainState`, the run's config and
    its dataset's `DatasetInfo`.
  """
  config = read_run_config(workdir)
  info = data_lib.get_data(config.data, seed=config.seed).info
  state, step = builders.restore_train_state(config, workdir)
  if step == 0:
    raise ValueError(f'no checkpoint in {workdir}/checkpoints')
  return state, config, info


def export_run(workdir: str, out: Optional[str] = None,
               compressed: bool = False) -> export_lib.ExportSummary:
  """Exports a finished run's latest checkpoint (what the CLI does).

  Args:
    workdir: the run's workdir.
    out: the file to write; default ``<workdir>/sparse_model.npz``.
    compressed: see `rigl_jax.deploy.export.export`.

  Returns:
    The `ExportSummary`.
  """
  state, config, info = restore_run(workdir)
  masks = rigl_jax.get_masks(state.opt_state)
  metadata = {
      'model': {'name': config.model.name,
                'kwargs': dict(config.model.get('kwargs', {}) or {}),
                'num_classes': int(info.num_classes)},
      'input': {'shape': list(info.input_shape), 'kind': info.kind},
      'step': int(state.step),
      'sparsity': dict(config.sparsity.to_dict()),
  }
  out = out or os.path.join(workdir, 'sparse_model.npz')
  return export_lib.export(
      out, jax.device_get(state.params),
      batch_stats=jax.device_get(state.batch_stats), masks=masks,
      metadata=json.loads(json.dumps(metadata, default=str)),
      compressed=compressed)


def main(argv: Optional[Sequence[str]] = None) -> int:
  """``python -m rigl_jax.deploy --workdir DIR [--out FILE] [--compressed]``.

  Prints one line per leaf and the dense and exported sizes.

  Returns:
    The exit code: 0, or 2 with one ``error:`` line for a bad workdir.
  """
  parser = cli_lib.ArgumentParser(
      prog='python -m rigl_jax.deploy',
      description='Export a finished run as a compact sparse .npz file.')
  parser.add_argument('--workdir', required=True,
                      help='the run (results.json and checkpoints/)')
  parser.add_argument('--out', default=None, help='the file to write '
                      '(default: <workdir>/sparse_model.npz)')
  parser.add_argument('--compressed', action='store_true',
                      help='zip-deflate the arrays')
  args = parser.parse_args(argv)
  try:
    summary = export_run(args.workdir, args.out, args.compressed)
  except (ValueError, OSError) as e:
    print(f'error: {e}', file=sys.stderr)
    return 2
  print(summary.table())
  print(f'wrote {summary.path}')
  return 0


if __name__ == '__main__':
  sys.exit(main())
