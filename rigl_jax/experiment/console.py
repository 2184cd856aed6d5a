"""What a run prints: progress, evaluations, checkpoints and a summary.

By default the command-line tools print only these lines (on stderr, one
per event, so they read the same in a terminal, a log file or a SLURM
output), and the libraries underneath (orbax, TensorFlow, XLA, clu's
logging writer) stay quiet: `quiet_libraries` raises absl's threshold to
WARNING unless the command line sets ``--verbosity`` (``-v 0`` restores
every INFO line). Metrics still go in full to TensorBoard and
``metrics.jsonl``.

Only process 0 of a multi-host run prints progress.

Example:

>>> progress_line(300, 1000, 104.0, {'train_loss': 0.51234,
...               'global_sparsity': 0.9})
'step  300/1000  30% | 104.0 steps/s | ETA 0:00:06 | loss 0.5123 | sparsity 0.900'
"""

from __future__ import annotations

import datetime
import math
import os
import sys
from typing import Any, Mapping

from absl import flags
from absl import logging


# Notices TensorFlow's C++ side prints while it loads, whatever
# TF_CPP_MIN_LOG_LEVEL says (XLA's TSL logging starts before TF reads it).
_LOAD_NOTICES = ('All log messages before absl::InitializeLog()',
                 'oneDNN custom operations are on',
                 'cpu_feature_guard.cc', 'To enable the following instructions')


def import_tensorflow_quietly() -> None:
  """Imports TensorFlow with its load-time notices dropped.

  Whatever else it prints while loading (and any error) still reaches
  stderr. Does nothing when TensorFlow is already loaded or not installed.
  """
  if 'tensorflow' in sys.modules:
    return
  import importlib.util  # pylint: disable=g-import-not-at-top
  import tempfile  # pylint: disable=g-import-not-at-top
  if importlib.util.find_spec('tensorflow') is None:
    return
  os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '1')  # no INFO logs
  sys.stderr.flush()
  saved = os.dup(2)
  with tempfile.TemporaryFile(mode='w+b') as captured:
    os.dup2(captured.fileno(), 2)
    try:
      import tensorflow  # pylint: disable=g-import-not-at-top,unused-import,import-outside-toplevel
    finally:
      os.dup2(saved, 2)
      os.close(saved)
      captured.seek(0)
      text = captured.read().decode('utf-8', 'replace')
      kept = [line for line in text.splitlines()
              if line and not any(n in line for n in _LOAD_NOTICES)]
      if kept:
        print('\n'.join(kept), file=sys.stderr, flush=True)


def quiet_libraries() -> None:
  """Library chatter off unless ``--verbosity`` was given.

  Call after flag parsing (absl applies ``--verbosity`` then).
  """
  verbosity = flags.FLAGS['verbosity'] if 'verbosity' in flags.FLAGS else None
  if verbosity is None or not verbosity.present:
    logging.set_verbosity(logging.WARNING)


_state = {'open_line': False}  # a live progress line awaits its newline


def say(message: str, *args: Any) -> None:
  """One console line (``message % args``) on stderr, from process 0."""
  if _process_index() != 0:
    return
  if _state['open_line']:
    print(file=sys.stderr)
    _state['open_line'] = False
  print(message % args if args else message, file=sys.stderr, flush=True)


class Progress:
  """The training progress display.

  On a terminal one line is rewritten in place at every logged step; in a
  file or a pipe a line is printed at about every tenth of the run (a
  multiple of ``log_every``), so a whole run fits on one screen.

  Args:
    total: the run's last step.
    log_every: the loop's logging interval (steps).
  """

  def __init__(self, total: int, log_every: int):
    self.total = total
    self.every = log_every * max(1, math.ceil(total / 10 / log_every))
    self.live = sys.stderr.isatty()

  def update(self, step: int, steps_per_sec: float,
             summary: Mapping[str, Any]) -> None:
    """Shows the step's progress (call at logged steps)."""
    if _process_index() != 0:
      return
    line = progress_line(step, self.total, steps_per_sec, summary)
    milestone = step % self.every == 0 or step == self.total
    if self.live:
      print('\r' + line, end='', file=sys.stderr, flush=True)
      _state['open_line'] = True
      if milestone:  # keeps the line
        print(file=sys.stderr, flush=True)
        _state['open_line'] = False
    elif milestone:
      say(line)


def _process_index() -> int:
  jax = sys.modules.get('jax')
  return jax.process_index() if jax is not None else 0


def _duration(seconds: float) -> str:
  return str(datetime.timedelta(seconds=int(max(0.0, seconds))))


def progress_line(step: int, total: int, steps_per_sec: float,
                  summary: Mapping[str, Any]) -> str:
  """``step 300/1000 30% | 104.0 steps/s | ETA 0:00:07 | loss ... | ...``.

  Args:
    step: the step just finished.
    total: the run's last step.
    steps_per_sec: the rate since this process started training.
    summary: the logged training metrics (``train_loss`` and the global
      sparsity, ``global_sparsity`` or ``sparsity/global``, are shown when
      present).

  Returns:
    The line.
  """
  width = len(str(total))
  parts = [f'step {step:>{width}}/{total} {100 * step / max(total, 1):3.0f}%',
           f'{steps_per_sec:.1f} steps/s',
           f'ETA {_duration((total - step) / max(steps_per_sec, 1e-9))}']
  if 'train_loss' in summary:
    parts.append(f"loss {float(summary['train_loss']):.4f}")
  sparsity = summary.get('global_sparsity', summary.get('sparsity/global'))
  if sparsity is not None:
    parts.append(f'sparsity {float(sparsity):.3f}')
  return ' | '.join(parts)


def metrics_line(prefix: str, values: Mapping[str, Any]) -> str:
  """``eval @ 300: accuracy 0.8427 | loss 0.5136`` (floats to 4 places)."""
  shown = [f'{k} {float(v):.4f}' for k, v in values.items()
           if isinstance(v, (int, float)) or hasattr(v, 'dtype')]
  return f"{prefix}: {' | '.join(shown)}"


def summary_lines(results: Mapping[str, Any], workdir: str) -> list[str]:
  """The end of a run: its result, where its files are, how to look."""
  workdir = os.path.abspath(workdir)
  metric = next((k for k in ('test_accuracy', 'test_bits_per_char',
                             'test_perplexity') if k in results), None)
  head = [f"done: {results.get('steps', '?')} steps in "
          f"{_duration(results.get('wall_time_s', 0.0))}"]
  if metric:
    head.append(f'{metric} {results[metric]:.4f}')
  if 'global_sparsity' in results:
    head.append(f"global sparsity {results['global_sparsity']:.4f}")
  return [
      ', '.join(head),
      f'results:     {os.path.join(workdir, "results.json")}',
      f'metrics:     {os.path.join(workdir, "metrics.jsonl")} (one row per '
      'logged step)',
      f'checkpoints: {os.path.join(workdir, "checkpoints")}',
      f'TensorBoard: tensorboard --logdir {workdir}',
  ]
