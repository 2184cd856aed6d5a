"""Where a run's metrics go: TensorBoard events plus ``metrics.jsonl``.

``metrics.jsonl`` holds one JSON object per logged step (``{"step": 100,
"train_loss": ..., ...}``); the reports and the reliability tests read it.
A run resumed from a checkpoint first drops the rows its previous attempt
logged after that checkpoint, so a resumed run's file equals an uninterrupted
run's.
"""

from __future__ import annotations

import json
import os
from typing import Any, Mapping

from clu import metric_writers
import numpy as np

METRICS_FILE = 'metrics.jsonl'


class JsonlWriter(metric_writers.interface.MetricWriter):
  """Appends scalars as JSON lines: ``{"step": ..., "name": value, ...}``.

  Example:

  >>> import tempfile
  >>> path = os.path.join(tempfile.mkdtemp(), METRICS_FILE)
  >>> JsonlWriter(path).write_scalars(10, {'train_loss': 0.5})
  >>> open(path).read()
  '{"step": 10, "train_loss": 0.5}\\n'
  """

  def __init__(self, path: str):
    self._path = path

  def write_scalars(self, step: int, scalars: Mapping[str, Any]) -> None:
    row = {'step': int(step)}
    row.update({k: float(np.asarray(v)) for k, v in scalars.items()})
    with open(self._path, 'a', encoding='utf-8') as f:
      f.write(json.dumps(row) + '\n')

  # Only scalars go to the JSON lines; the TensorBoard writer gets the rest.
  def write_summaries(self, step, values, metadata=None):
    pass

  def write_images(self, step, images):
    pass

  def write_videos(self, step, videos):
    pass

  def write_audios(self, step, audios, *, sample_rate):
    pass

  def write_texts(self, step, texts):
    pass

  def write_histograms(self, step, arrays, num_buckets=None):
    pass

  def write_hparams(self, hparams):
    pass

  def flush(self):
    pass

  def close(self):
    pass


def truncate_jsonl(path: str, last_step: int) -> None:
  """Drops the rows of ``path`` logged after ``last_step`` (and lines cut
  short by a kill)."""
  if not os.path.exists(path):
    return
  with open(path, encoding='utf-8') as f:
    lines = f.readlines()
  keep = []
  for line in lines:
    try:
      if json.loads(line)['step'] <= last_step:
        keep.append(line)
    except (ValueError, KeyError):
      pass  # a line cut short by the kill
  tmp = path + '.tmp'
  with open(tmp, 'w', encoding='utf-8') as f:
    f.writelines(keep)
  os.replace(tmp, path)


def create_writer(workdir: str, start_step: int, hparams: Mapping[str, Any],
                  is_main: bool = True) -> metric_writers.MetricWriter:
  """The run's metric writer, ready for a (possibly resumed) run.

  Args:
    workdir: the run's directory.
    start_step: the step the run resumes from (0: a new run, which also
      records ``hparams``).
    hparams: the flattened config, for TensorBoard's hparams plugin.
    is_main: process 0 of a multi-host run writes files; the others only log.

  Returns:
    A clu `MetricWriter`: TensorBoard events and `JsonlWriter` on the main
    process, logging only elsewhere.
  """
  writer = metric_writers.create_default_writer(
      workdir, just_logging=not is_main)
  if is_main:
    jsonl = os.path.join(workdir, METRICS_FILE)
    truncate_jsonl(jsonl, start_step)
    writer = metric_writers.MultiWriter([writer, JsonlWriter(jsonl)])
  if start_step == 0:
    writer.write_hparams({k: str(v) for k, v in hparams.items()})
  return writer
