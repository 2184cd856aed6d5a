"""Stopping a run cleanly: SIGTERM, and the kill points the tests use.

A cluster that preempts a job sends SIGTERM first. `SigtermFlag` records it
while the training loop runs; the loop then saves a checkpoint of the step it
is at and raises `Preempted`, so rerunning the same command resumes there.

`fault_point` is a test hook: ``RIGL_JAX_FAULT="<point>@<step>"`` SIGKILLs the
process at that point of that step (``after_step``, ``during_save``,
``after_save``), so tests can kill a run at exact moments (mid checkpoint
write, right after a mask update) and check that it resumes bit for bit.
"""

from __future__ import annotations

import os
import signal
import threading


class Preempted(Exception):
  """SIGTERM arrived; a checkpoint of ``step`` was written before stopping."""

  def __init__(self, step: int, directory: str):
    super().__init__(f'stopped by SIGTERM after saving a checkpoint of step '
                     f'{step} in {directory}; rerun the same command to resume')
    self.step = step


class SigtermFlag:
  """Records SIGTERM while installed (main thread only).

  Example:

  >>> with SigtermFlag() as sigterm:
  ...   stop = sigterm.raised   # checked once per step by the loop
  >>> stop
  False
  """

  def __init__(self):
    self.raised = False
    self._previous = None

  def __enter__(self) -> 'SigtermFlag':
    if threading.current_thread() is threading.main_thread():
      self._previous = signal.signal(signal.SIGTERM, self._handle)
    return self

  def _handle(self, signum, frame) -> None:
    del signum, frame
    self.raised = True

  def __exit__(self, *exc) -> bool:
    if self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)
    return False


_FAULT = os.environ.get('RIGL_JAX_FAULT', '')


def fault_point(point: str, step: int) -> None:
  """SIGKILLs this process if ``RIGL_JAX_FAULT`` names ``point@step``."""
  if _FAULT and _FAULT == f'{point}@{step}':
    os.kill(os.getpid(), signal.SIGKILL)
