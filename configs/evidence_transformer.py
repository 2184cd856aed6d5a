"""Evidence sweep: sparse training of a character transformer, CPU-sized.

configs/cpu_transformer_shakespeare.py (pre-norm causal decoder, blocks
scanned and declared to `sparsify` as stacked layers; attention, MLP,
token-embedding and output kernels sparse, biases, norms and the position
embedding dense; Adam, cosine learning rate, gradient clipping 1.0) made
small enough that the whole sweep fits in a few hours on a 2-core CPU:
4 blocks of width 64 (4 heads, MLP 256), 600 steps of 64 sequences of 64
characters, learning rate 3e-3 (as the LSTM evidence: in 600 steps dense
reaches 2.82 bits/char on the test split with it), mask updates every 50
steps until 75% of training.

Runs, seed by seed: dense; Static, SET, RigL and gradual pruning at 80% and
90%, ERK and uniform; RigL at 2x training length with ERK. The sweep
``layout`` trains RigL at 90% ERK (seed 0) once with scanned and once with
unrolled blocks: `scan_layers` only changes the parameter layout, so both
runs must give the same masks and losses. Metric: bits per character on
the test split (lower is better).

Usage:
  python experiments/run_evidence.py --config configs/evidence_transformer.py \
      --root experiments/results/transformer [--sweep seed0|layout]
"""

from __future__ import annotations

import ml_collections

from configs import cpu_transformer_shakespeare

NUM_STEPS = 600
SEEDS = (0, 1, 2)
SPARSITIES = (0.8, 0.9)
DISTRIBUTIONS = ('erk', 'uniform')
METHODS = ('static', 'set', 'rigl', 'pruning')
MODEL = {'embed_dim': 64, 'num_layers': 4, 'num_heads': 4, 'mlp_dim': 256,
         'max_len': 64, 'scan_layers': True}


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  config = cpu_transformer_shakespeare.get_config(arg)
  config.model.kwargs = dict(MODEL)
  config.num_train_steps = NUM_STEPS
  config.optimizer.learning_rate = 3e-3
  # Initial masks from config.seed (paper.sparsity_config pins them to 0).
  config.sparsity.seed = ml_collections.config_dict.placeholder(int)
  config.sparsity.update_freq = 50
  config.log_every_steps = 50
  config.checkpoint_every_steps = 0  # one checkpoint, at the end
  config.keep_checkpoints = 1
  return config


def _base(seed: int) -> dict:
  return {'sparsity.method': 'dense', 'sparsity.distribution': 'erk',
          'sparsity.sparsity': 0.0, 'training_multiplier': 1.0,
          'seed': seed}


def _seed(seed: int) -> list[dict]:
  return [_base(seed),
          dict(_base(seed), **{'sparsity.method': list(METHODS),
                               'sparsity.distribution': list(DISTRIBUTIONS),
                               'sparsity.sparsity': list(SPARSITIES)}),
          dict(_base(seed), **{'sparsity.method': 'rigl',
                               'training_multiplier': 2.0,
                               'sparsity.sparsity': list(SPARSITIES)})]


def get_sweep(name: str | None = None) -> list[dict]:
  """The evidence sweep.

  Args:
    name: None: every seed, seed by seed (57 runs); 'seed0': seed 0 only;
      'layout': RigL 90% ERK seed 0 with scanned and with unrolled blocks.
  """
  if name == 'layout':
    return [dict(_base(0), **{'sparsity.method': 'rigl',
                              'sparsity.sparsity': 0.9,
                              'model.kwargs.scan_layers': [True, False]})]
  seeds = {None: SEEDS, 'seed0': (0,)}.get(name)
  if seeds is None:
    raise ValueError(f"unknown sweep {name!r}; valid: 'seed0', 'layout' "
                     'or None')
  return [r for seed in seeds for r in _seed(seed)]
