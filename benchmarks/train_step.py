"""Benchmark: a config's training step as main.py runs it, dense vs sparse.

For each ``--config`` (``path[:arg]``, as main.py takes it) this builds the
model, the optimizer and the `TrainState` with main.py's own functions
(`builders.build_training`, `builders.create_train_state`,
`train_step.make_train_step`), feeds synthetic batches of the config's shape
(`data.registry_info`: nothing is downloaded or read), and times, in
interleaved rounds (each program once per round, in a random order):

  * ``dense``: the same config with ``sparsity.method='dense'`` (main.py's
    dense baseline), the step main.py runs for it (``mask_update=False``);
  * ``plain``: the sparse method's ordinary step (``mask_update=False``);
  * ``update``: its mask-update step (``mask_update=True``);
  * ``cond`` (``--cond``): the single program with `lax.cond`, as a user's
    own loop calls ``tx.update`` without ``mask_update``.

It prints examples per second (images, or tokens for text), each step's
median time, and the sparse/dense ratio of the plain step and of the step
amortised over the config's ``update_freq`` (one mask update per
``update_freq`` steps, as main.py runs them); ``update - plain`` is what a
mask update adds. Ratios are medians over rounds of the round's own ratio,
so that drift between rounds cancels. With ``--json FILE`` the figures are
also written there.

Usage (an accelerator; the defaults are sized for one GPU):
  python benchmarks/train_step.py \\
      --config configs/imagenet_resnet50.py:method=rigl,dist=erk,sparsity=0.9 \\
      --batch 256 [--config ... --batch ...] [--rounds 10] [--repeats 5]
On this repository's 2-core CPU use a small config, e.g.
  python benchmarks/train_step.py --config configs/default.py --batch 64
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Optional

import jax
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(
    __file__))))  # the configs import `configs.X`

# pylint: disable=g-import-not-at-top,wrong-import-position
from rigl_jax.experiment import builders
from rigl_jax.experiment import cli
from rigl_jax.experiment import data as data_lib
from rigl_jax.experiment import train_step as train_step_lib
from rigl_jax.experiment import validation


def synthetic_batch(info: data_lib.DatasetInfo, batch: int) -> dict:
  """Random inputs and labels of ``info``'s shapes, on the device."""
  k1, k2 = jax.random.split(jax.random.PRNGKey(0))
  if info.kind == 'image':
    return {'image': jax.random.normal(k1, (batch, *info.input_shape)),
            'label': jax.random.randint(k2, (batch,), 0, info.num_classes)}
  tokens = jax.random.randint(k1, (batch, info.input_shape[0] + 1), 0,
                              info.num_classes)
  return {'inputs': tokens[:, :-1], 'targets': tokens[:, 1:]}


def dense_twin(config):
  """The config with its sparse method replaced by main.py's dense run."""
  dense = config.copy_and_resolve_references()
  dense.sparsity.method = 'dense'
  dense.sparsity.sparsity = 0.0
  if 'custom_sparsity' in dense.sparsity:
    dense.sparsity.custom_sparsity = None
  return dense


class Program:
  """One jitted step and the state it carries from call to call."""

  def __init__(self, config, info, batch, mask_update):
    model, tx, lr_fn, _ = builders.build_training(config, info)
    self.update_freq = int(config.sparsity.get('update_freq', 100))
    self.state = builders.create_train_state(
        config, model, tx, info, jax.random.PRNGKey(config.seed))
    self.step = train_step_lib.make_train_step(
        model, tx, lr_fn, info.kind, info.num_classes,
        config.optimizer.label_smoothing)
    self.batch = batch
    self.mask_update = mask_update
    t0 = time.perf_counter()
    self(1)  # compiles
    self.compile_s = time.perf_counter() - t0
    self(1)
    print(f'  compiled {config.sparsity.method} (mask_update={mask_update}) '
          f'in {self.compile_s:.1f} s', flush=True)

  def __call__(self, repeats: int) -> float:
    """Seconds per step over ``repeats`` steps."""
    jax.block_until_ready(self.state)
    t0 = time.perf_counter()
    for _ in range(repeats):
      self.state, _ = self.step(self.state, self.batch, self.mask_update)
    jax.block_until_ready(self.state)
    return (time.perf_counter() - t0) / repeats


def load(spec: str, batch: Optional[int]):
  """``spec``'s config with its batch size set, validated.

  Raises:
    ValueError: a missing file or a bad config, naming the problem.
  """
  config = cli.load_config(spec)
  if batch is not None:
    if batch < 1:
      raise ValueError(f'the batch size must be at least 1; got {batch}')
    config.data.batch_size = batch
  validation.validate(config)
  return config


def bench_config(spec: str, config, rounds: int, repeats: int,
                 cond: bool) -> dict:
  """Times the programs of ``config`` (loaded from ``spec`` by `load`);
  returns the figures (and prints them)."""
  batch = int(config.data.batch_size)
  info = data_lib.registry_info(config.data)
  data = synthetic_batch(info, batch)
  per_example = info.input_shape[0] if info.kind == 'text' else 1
  unit = 'tokens/s' if info.kind == 'text' else 'images/s'
  method = config.sparsity.method
  programs = {'dense': Program(dense_twin(config), info, data, False),
              'plain': Program(config, info, data, False),
              'update': Program(config, info, data, True)}
  if cond:
    programs['cond'] = Program(config, info, data, None)
  update_freq = programs['plain'].update_freq
  times = {k: [] for k in programs}
  order = np.random.default_rng(0)
  for _ in range(rounds):
    for name in order.permutation(list(programs)):
      times[name].append(programs[name](repeats))
  t = {k: np.asarray(v) for k, v in times.items()}
  amortised = ((update_freq - 1) * t['plain'] + t['update']) / update_freq
  out = {
      'config': spec, 'model': config.model.name, 'method': method,
      'sparsity': float(config.sparsity.sparsity),
      'distribution': config.sparsity.get('distribution', 'erk'),
      'batch': batch, 'unit': unit, 'update_freq': update_freq,
      'platform': jax.devices()[0].platform,
      'device': jax.devices()[0].device_kind,
      'compile_s': {k: p.compile_s for k, p in programs.items()},
      'step_ms': {k: float(np.median(v)) * 1e3 for k, v in t.items()},
      'throughput': {k: batch * per_example / float(np.median(v))
                     for k, v in t.items()},
      'plain_vs_dense': float(np.median(t['plain'] / t['dense'])),
      'amortised_vs_dense': float(np.median(amortised / t['dense'])),
      'mask_update_ms': float(np.median(t['update'] - t['plain'])) * 1e3,
  }
  if cond:
    out['cond_vs_dense'] = float(np.median(t['cond'] / t['dense']))
  print(f'{spec}: {config.model.name}, {method} '
        f'{out["distribution"]} {out["sparsity"]:.0%}, batch {batch}, '
        f'{out["device"]}; {rounds} interleaved rounds of {repeats} steps')
  for k in programs:
    print(f'  {k:<7}{out["step_ms"][k]:9.2f} ms/step '
          f'{out["throughput"][k]:12.0f} {unit}  '
          f'(compile {out["compile_s"][k]:.1f} s)')
  print(f'  {method} / dense: plain step {out["plain_vs_dense"]:.3f}x, '
        f'amortised over {update_freq} steps '
        f'{out["amortised_vs_dense"]:.3f}x; a mask update adds '
        f'{out["mask_update_ms"]:.1f} ms' +
        (f'; cond program {out["cond_vs_dense"]:.3f}x' if cond else ''))
  return out


def main() -> None:
  parser = cli.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--config', action='append', required=True,
                      help='path[:arg] of a config, as main.py takes it; '
                      'repeat for several')
  parser.add_argument('--batch', type=int, action='append',
                      help='batch size per --config (default: the '
                      'config\'s)')
  parser.add_argument('--rounds', type=int, default=10)
  parser.add_argument('--repeats', type=int, default=5,
                      help='steps per program per round')
  parser.add_argument('--cond', action='store_true',
                      help='also time the single lax.cond program')
  parser.add_argument('--json', help='write the figures to this file')
  args = parser.parse_args()
  batches = args.batch or []
  if len(batches) not in (0, len(args.config)):
    parser.error(f'give --batch once per --config ({len(args.config)}) or '
                 f'not at all; got {len(batches)}')
  configs = []
  for i, spec in enumerate(args.config):
    try:  # every config checked before anything is timed
      configs.append(load(spec, batches[i] if batches else None))
    except ValueError as e:
      parser.error(f'--config {spec}: {e}')
  results = []
  for spec, config in zip(args.config, configs):
    results.append(bench_config(spec, config, args.rounds, args.repeats,
                                args.cond))
    if args.json:
      with open(args.json, 'w') as f:
        json.dump(results, f, indent=1)


if __name__ == '__main__':
  main()
