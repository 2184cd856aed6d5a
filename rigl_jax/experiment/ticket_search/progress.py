"""Where a ticket search stands, checkpointed so a killed search resumes.

A ticket search is a sequence of trainings, its *phases* (IMP: each round's
training and its control branches; CS: each lambda's rounds and its
ticket's retraining), each ``total_steps`` long. `Progress` checkpoints
what the search carries (a dict of train states: the one training now and
what later phases need, e.g. the rewind point) every
``config.checkpoint_every_steps`` steps inside a phase and at the end of
each, with the results so far, under ``<workdir>/checkpoints`` (the same
`checkpoints.Checkpoints` as plain runs: orbax, packed masks, checksums,
fallback to the previous checkpoint, refusal of another config). A
checkpoint's number is the search's *position*,
``phase * (total_steps + 1) + step``, so positions grow through the search
and the kill points of `preemption.fault_point` name them.

Rerunning the same command restores the newest checkpoint: the phases
before it are skipped (their results are in the checkpoint), the phase it
stopped in continues from its step (the data stream and every step are
deterministic), and the search ends with the tickets and accuracies of an
uninterrupted one. SIGTERM saves the position it is at and stops
(`preemption.Preempted`), as plain runs do.
"""

from __future__ import annotations

import os
from typing import Any, Callable, NamedTuple, Optional

import ml_collections

from rigl_jax.experiment import checkpoints as checkpoints_lib
from rigl_jax.experiment import preemption


class Resumed(NamedTuple):
  """A restored search: the carried ``trees`` at ``step`` of ``phase``."""
  trees: dict[str, Any]
  phase: int
  step: int
  results: dict[str, Any]


class Progress:
  """Checkpoints of a ticket search (see the module doc).

  Args:
    config: the search's config (saved with every checkpoint; resuming
      with another is refused).
    workdir: the search's workdir.
    total_steps: the steps of one phase.
    sigterm: the `preemption.SigtermFlag` installed around the search.
  """

  def __init__(self, config: ml_collections.ConfigDict, workdir: str,
               total_steps: int, sigterm: preemption.SigtermFlag):
    self.total_steps = total_steps
    self.every = config.get('checkpoint_every_steps') or total_steps
    self.directory = os.path.join(os.path.abspath(workdir), 'checkpoints')
    self._ckpts = checkpoints_lib.Checkpoints(
        self.directory, config.to_dict(),
        keep=config.get('keep_checkpoints', 2))
    self._sigterm = sigterm

  def position(self, phase: int, step: int) -> int:
    return phase * (self.total_steps + 1) + step

  def restore(self, target: dict[str, Any]) -> Optional[Resumed]:
    """The newest good checkpoint, or None for a fresh search.

    Args:
      target: the carried trees as a fresh search builds them (their
        structure, dtypes and shardings).
    """
    trees, pos, extra = self._ckpts.restore_meta(target)
    if extra is None:
      return None
    phase, step = divmod(pos, self.total_steps + 1)
    return Resumed(trees, phase, step, extra['results'])

  def save(self, phase: int, step: int, trees: dict[str, Any],
           results: dict[str, Any]) -> None:
    """Checkpoints the carried ``trees`` at ``step`` of ``phase``.

    ``step == total_steps`` means the phase is over and its results are in
    ``results``; a resumed search goes on with the next phase. On SIGTERM,
    raises `preemption.Preempted` once the checkpoint is written.
    """
    pos = self.position(phase, step)
    self._ckpts.save(pos, trees, extra={'results': results})
    preemption.fault_point('during_save', pos)
    self._ckpts.wait()
    preemption.fault_point('after_save', pos)
    if self._sigterm.raised:
      raise preemption.Preempted(pos, self.directory)

  def periodic(self, phase: int, trees: Callable[[Any], dict[str, Any]],
               results: dict[str, Any]) -> Callable[[Any, int], None]:
    """The per-step hook of a phase's training (`common.train_to`).

    Saves ``trees(state)`` every ``checkpoint_every_steps`` steps, and on
    SIGTERM (then stops). The phase's last step is the driver's to save,
    after it has evaluated the phase.
    """
    def hook(state: Any, step: int) -> None:
      pos = self.position(phase, step)
      preemption.fault_point('after_step', pos)
      stop = self._sigterm.stop(pos)  # agreed by every process
      if step < self.total_steps and (step % self.every == 0 or stop):
        self.save(phase, step, trees(state), results)
    return hook

  def close(self) -> None:
    self._ckpts.close()
