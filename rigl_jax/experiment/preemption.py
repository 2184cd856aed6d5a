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

import jax
from jax.experimental import multihost_utils


class Preempted(Exception):
  """SIGTERM arrived; a checkpoint of ``step`` was written before stopping."""

  def __init__(self, step: int, directory: str):
    super().__init__(f'stopped by SIGTERM after saving a checkpoint of step '
                     f'{step} in {directory}; rerun the same command to resume')
    self.step = step


class SigtermFlag:
  """Records SIGTERM while installed; `stop` says when to save and stop.

  One process: a Python SIGTERM handler sets ``raised``, and the loop
  saves at the step it is at. Several processes (after
  `jax.distributed.initialize`): each host may get the signal at another
  step, and a host that enters the collective save while the others run
  the train step hangs them all. There JAX's preemption service (its
  coordination service catches SIGTERM) agrees on the step:
  `jax.experimental.multihost_utils.reached_preemption_sync_point` turns
  True on every process at the same step, one past the largest step any
  of them had reached when the first signal arrived. The loop must call
  `stop` at every step, from the same start step on every process.

  Example:

  >>> with SigtermFlag() as sigterm:
  ...   stop = sigterm.stop(1)   # checked once per step by the loop
  >>> stop
  False
  """

  def __init__(self):
    self.raised = False
    self._previous = None
    self._synced = False

  def __enter__(self) -> 'SigtermFlag':
    self._synced = (jax.process_count() > 1 and
                    jax.config.jax_enable_preemption_service)
    if (not self._synced and
        threading.current_thread() is threading.main_thread()):
      self._previous = signal.signal(signal.SIGTERM, self._handle)
    return self

  def _handle(self, signum, frame) -> None:
    del signum, frame
    self.raised = True

  def stop(self, step: int) -> bool:
    """Whether to save at ``step`` and stop (the same on every process)."""
    if self._synced and not self.raised:
      self.raised = multihost_utils.reached_preemption_sync_point(step)
    return self.raised

  def __exit__(self, *exc) -> bool:
    if self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)
    return False


_FAULT = os.environ.get('RIGL_JAX_FAULT', '')


def fault_point(point: str, step: int) -> None:
  """SIGKILLs this process if ``RIGL_JAX_FAULT`` names ``point@step``."""
  if _FAULT and _FAULT == f'{point}@{step}':
    os.kill(os.getpid(), signal.SIGKILL)
