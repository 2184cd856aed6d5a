"""Checkpoints that survive kills, corruption and config mix-ups.

Each checkpoint is one orbax step folder holding two items:

- ``state``: the whole train state, saved sharded (each process writes its
  shards) with the masks bit-packed (one bit per weight instead of a byte);
- ``meta``: JSON with the step, the config that wrote it, a fingerprint of
  the saved state (`integrity`: summed on the devices shard by shard, so it
  neither copies the state to the host nor depends on the mesh, and it is
  written and verified on one host or many) and what the caller adds
  (``extra``: a ticket search's results so far).

Orbax writes a step into a temporary folder and renames it when complete, so
a kill during a write leaves no half checkpoint; leftover temporary folders
are removed when the next run opens the folder. On restore the newest
checkpoint is tried first; one that cannot be read or fails its checksum is
moved to ``<checkpoints>/damaged/`` with a warning and the previous one is
used. A checkpoint written by an incompatible config is refused with the
differing fields named. Restoring takes the target's shardings, so a run
resumes on another mesh shape.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from typing import Any, Optional

from absl import logging
import jax
from jax.experimental import multihost_utils
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp

from rigl_jax import transform
from rigl_jax.experiment import integrity

# Config fields that may change between a run and its resumption: they do
# not change what is computed (where it runs, how often it logs or saves).
RESUMABLE_FIELDS = (
    'log_every_steps', 'eval_every_steps', 'checkpoint_every_steps',
    'keep_checkpoints', 'tune_cpu_allocator', 'mesh', 'sharding',
    'data.tfds_data_dir', 'data.eval_batch_size', 'eval_split',
    'on_nonfinite', 'profile_steps',
    'sparsity.check_leaks',  # stops a run or not; never changes its results
)


def flatten_config(config: dict[str, Any], prefix: str = '') -> dict[str, Any]:
  """Nested dict -> {'a.b.c': value}; sequences become lists (JSON-like)."""
  out = {}
  for k, v in config.items():
    name = f'{prefix}{k}'
    if isinstance(v, dict):
      out.update(flatten_config(v, name + '.'))
    else:
      out[name] = json.loads(json.dumps(v, default=str))
  return out


def implicit_defaults() -> dict[str, Any]:
  """Values a config field has where an older config does not declare it.

  Every ``sparsity`` field is a `rigl_jax.sparsify` argument (or a method
  hyperparameter); a config written before the field was declared ran with
  the core's default, so a checkpoint of it resumes under a config that sets
  that default. The same holds for ``model.dtype`` (float32).
  """
  defaults = {f'sparsity.{k}': v
              for k, v in transform.config_defaults().items()}
  defaults['model.dtype'] = 'float32'  # declared in December 2026
  return defaults


def config_differences(saved: dict[str, Any], current: dict[str, Any]
                       ) -> list[str]:
  """The fields (outside `RESUMABLE_FIELDS`) where two configs differ.

  A field that one config lacks and the other sets to its
  `implicit_defaults` value is not a difference.

  Args:
    saved: the config a checkpoint was written with (nested dict).
    current: the config of this run (nested dict).

  Returns:
    Lines like ``"sparsity.sparsity: 0.9 -> 0.95"``, sorted.
  """
  a, b = flatten_config(saved), flatten_config(current)

  def resumable(name):
    return any(name == f or name.startswith(f + '.') for f in RESUMABLE_FIELDS)

  missing = object()
  defaults = implicit_defaults()
  out = []
  for name in sorted(set(a) | set(b)):
    if resumable(name):
      continue
    x, y = a.get(name, missing), b.get(name, missing)
    if name in defaults:
      x = defaults[name] if x is missing else x
      y = defaults[name] if y is missing else y
    if x != y:
      fmt = lambda v: '(unset)' if v is missing else repr(v)
      out.append(f'{name}: {fmt(x)} -> {fmt(y)}')
  return out


def state_checksum(state: Any) -> Optional[str]:
  """SHA-256 over every leaf's dtype, shape and bytes, in tree order.

  Returns None when the arrays are not all addressable from this process
  (multi-host), where no single process sees the whole state.
  """
  leaves = jax.tree.leaves(state)
  if any(isinstance(x, jax.Array) and not x.is_fully_addressable
         for x in leaves):
    return None
  h = hashlib.sha256()
  for x in jax.device_get(leaves):
    x = np.ascontiguousarray(np.asarray(x))
    h.update(f'{x.dtype.str}{x.shape}'.encode())
    h.update(x.tobytes())
  return h.hexdigest()


def _intact(packed: Any, meta: dict[str, Any]) -> bool:
  """Whether a restored (packed) state matches its checkpoint's meta.

  Every process computes the same answer (`integrity.fingerprint` is one
  collective program), so all of them fall back alike. Checkpoints written
  before fingerprints carry a SHA-256 of the whole state (`state_checksum`).
  """
  if 'fingerprint' in meta:
    return integrity.fingerprint(packed) == meta['fingerprint']
  expected = meta.get('checksum')
  return expected is None or state_checksum(packed) in (None, expected)


def _is_sparse_state(x: Any) -> bool:
  return isinstance(x, transform.SparseState)


def _map_masks(fn, state: Any) -> Any:
  """Applies ``fn`` to every mask array of every `SparseState` in ``state``."""

  def visit(x):
    if _is_sparse_state(x):
      return x._replace(masks=jax.tree.map(fn, x.masks))
    return x

  return jax.tree.map(visit, state, is_leaf=_is_sparse_state)


@jax.jit
def _pack(mask: jax.Array) -> jax.Array:
  return jnp.packbits(mask.reshape(-1))


def pack_masks(state: Any) -> Any:
  """Replaces each bool mask in the state by its bits packed into uint8."""
  return _map_masks(_pack, state)


def _packed_struct(mask: Any) -> jax.ShapeDtypeStruct:
  """The packed form of ``mask``, replicated over the mask's devices."""
  n = int(np.prod(mask.shape))
  sharding = getattr(mask, 'sharding', None)
  if isinstance(sharding, jax.sharding.NamedSharding):
    sharding = jax.sharding.NamedSharding(sharding.mesh,
                                          jax.sharding.PartitionSpec())
  return jax.ShapeDtypeStruct(((n + 7) // 8,), jnp.uint8, sharding=sharding)


def unpack_masks(packed: Any, target: Any) -> Any:
  """Inverse of `pack_masks`: bool masks shaped (and sharded) like ``target``.

  Args:
    packed: a state whose masks are packed.
    target: the same state with real masks (arrays or shape structs, with
      shardings where the masks should live).

  Returns:
    ``packed`` with every mask unpacked.
  """
  targets = []
  _map_masks(lambda m: targets.append(m) or m, target)
  it = iter(targets)

  def unpack(bits):
    t = next(it)
    n = int(np.prod(t.shape))
    sharding = getattr(t, 'sharding', None)
    fn = jax.jit(lambda b: jnp.unpackbits(b, count=n).reshape(t.shape)
                 .astype(jnp.bool_), out_shardings=sharding)
    return fn(bits)

  return _map_masks(unpack, packed)


class Checkpoints:
  """Saves and restores a train state in ``directory`` (see module doc).

  Args:
    directory: the checkpoint folder (created if missing).
    config: the run's config as a nested dict, stored with every checkpoint
      and compared on restore.
    keep: how many of the newest checkpoints to keep (>= 2 leaves a fallback
      if the newest one is damaged).
  """

  def __init__(self, directory: str, config: dict[str, Any], keep: int = 2):
    self.directory = os.path.abspath(directory)
    self.config = config
    self._keep = keep
    self._manager = self._open()

  def _open(self) -> ocp.CheckpointManager:
    self._remove_partial_writes()
    return ocp.CheckpointManager(
        self.directory, item_names=('state', 'meta'),
        options=ocp.CheckpointManagerOptions(max_to_keep=self._keep,
                                             create=True))

  def _remove_partial_writes(self) -> None:
    """Deletes orbax's temporary folders: writes a kill cut short."""
    if not os.path.isdir(self.directory):
      return
    for name in os.listdir(self.directory):
      if '.orbax-checkpoint-tmp' in name:
        logging.warning('Removing an unfinished checkpoint write: %s', name)
        shutil.rmtree(os.path.join(self.directory, name), ignore_errors=True)

  def all_steps(self) -> list[int]:
    return sorted(self._manager.all_steps())

  def save(self, step: int, state: Any,
           extra: Optional[dict[str, Any]] = None) -> None:
    """Starts writing ``state`` as checkpoint ``step`` (returns before the
    write finishes; `wait` blocks until it has). ``extra``: JSON data saved
    with it (a ticket search's results so far), back from `restore_meta`."""
    packed = pack_masks(state)
    # Summed on the devices, shard by shard (`integrity`): no host copy.
    meta = {'step': int(step), 'config': self.config,
            'fingerprint': integrity.fingerprint(packed), 'extra': extra}
    self._manager.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(packed),
        meta=ocp.args.JsonSave(meta)), force=True)

  def wait(self) -> None:
    self._manager.wait_until_finished()

  def close(self) -> None:
    self._manager.wait_until_finished()
    self._manager.close()

  def _move_aside(self, step: int) -> str:
    dest_dir = os.path.join(self.directory, 'damaged')
    os.makedirs(dest_dir, exist_ok=True)
    dest = os.path.join(dest_dir, str(step))
    k = 1
    while os.path.exists(dest):
      dest, k = os.path.join(dest_dir, f'{step}.{k}'), k + 1
    shutil.move(os.path.join(self.directory, str(step)), dest)
    return dest

  def restore(self, target: Any) -> tuple[Any, int]:
    """The newest good checkpoint, or ``(target, 0)`` if there is none.

    See `restore_meta`, which also gives the ``extra`` saved with it.
    """
    state, step, _ = self.restore_meta(target)
    return state, step

  def restore_meta(self, target: Any
                   ) -> tuple[Any, int, Optional[dict[str, Any]]]:
    """The newest good checkpoint, or ``(target, 0, None)`` if there is none.

    Args:
      target: the freshly initialised state (arrays or shape structs), whose
        structure, dtypes and shardings the restored state takes.

    Returns:
      ``(state, step, extra)``: ``extra`` as given to `save`.

    Raises:
      ValueError: the checkpoints were written by an incompatible config, or
        every checkpoint is damaged (nothing is deleted).
    """
    abstract = jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype,
                                       sharding=getattr(x, 'sharding', None)),
        target)
    abstract_packed = _map_masks(_packed_struct, abstract)
    damaged = []
    for step in reversed(self.all_steps()):
      try:
        meta = self._manager.restore(step, args=ocp.args.Composite(
            meta=ocp.args.JsonRestore()))['meta']
      except Exception as e:  # pylint: disable=broad-except
        damaged.append((step, f'unreadable metadata ({type(e).__name__})'))
        continue
      diff = config_differences(meta.get('config', {}), self.config)
      if diff:
        raise ValueError(
            f'the checkpoint at step {step} in {self.directory} was written '
            'by a different config; refusing to resume it with this one. '
            'Differences (checkpoint -> now): ' + '; '.join(diff) +
            '. Resume with the original config (saved in the checkpoint\'s '
            'meta), or use a new workdir.')
      error = None
      try:
        packed = self._manager.restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract_packed)))['state']
      except Exception as e:  # pylint: disable=broad-except
        error = f'unreadable state ({type(e).__name__}: {str(e)[:200]})'
      if jax.process_count() > 1:  # damaged for one process: for all
        failed = multihost_utils.process_allgather(
            np.array(error is not None))
        if error is None and np.any(failed):
          error = 'unreadable state on another process'
      if error is not None:
        damaged.append((step, error))
        continue
      if not _intact(packed, meta):
        damaged.append((step, 'checksum mismatch'))
        continue
      if damaged:
        # Every process found the same damage (the fingerprint is global);
        # one moves the folders, the others wait for it.
        for bad, why in damaged:
          dest = (self._move_aside(bad) if jax.process_index() == 0 else
                  os.path.join(self.directory, 'damaged', str(bad)))
          logging.warning('Checkpoint %d is damaged (%s); moved it to %s and '
                          'resumed from step %d.', bad, why, dest, step)
        if jax.process_count() > 1:
          multihost_utils.sync_global_devices('rigl_jax_damaged_moved')
        self._manager = self._open()
      return unpack_masks(packed, abstract), step, meta.get('extra')
    if damaged:
      raise ValueError(
          f'every checkpoint in {self.directory} is damaged: ' +
          '; '.join(f'step {s}: {why}' for s, why in damaged) +
          '. Nothing was deleted; move them away to start afresh, or use a '
          'new workdir.')
    return target, 0, None
