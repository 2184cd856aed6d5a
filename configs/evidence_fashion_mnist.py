"""Evidence sweep: the RigL paper's comparisons on Fashion-MNIST, CPU-sized.

LeNet-300-100 (784-300-100-10, 266,200 kernel weights) trained with every
method at the same budget (`NUM_EPOCHS` = 5 epochs = 2340 steps of batch
128, as the ticket-search configs train per round; SGD + Nesterov, cosine
learning rate, label smoothing 0.1, weight decay 1e-4; mask updates every
100 steps until 75% of training):

* dense, and small-dense: a dense MLP whose hidden widths are shrunk (3:1,
  as 300:100) until its kernel weights match the sparse models' non-zeros
  at each sparsity (`small_dense_widths`);
* static, SET, SNFS, RigL and gradual pruning at 80, 90, 95 and 98%
  sparsity, uniform and ERK, all layers sparse;
* RigL and Static with 2x training length (``training_multiplier=2``), and
  dense 2x as their reference;
* the methods since RigL (`SINCE_RIGL`: SRigL, GraNet, Top-KAST) at 90, 95
  and 98% ERK with their papers' defaults (configs/default.py), next to
  the grid's rows at the same budget.

Every run uses its seed for the weights, the data order and the initial
random masks (``sparsity.seed`` follows ``seed``). The sweep is ordered seed
by seed (the 2x runs after the 1x grid), so a stopped sweep has whole
seeds done.

Usage (one process for the whole sweep; see experiments/README.md):
  python experiments/run_evidence.py \
      --config configs/evidence_fashion_mnist.py \
      --root experiments/results/fashion_mnist
One run alone:
  python main.py --config configs/evidence_fashion_mnist.py --workdir DIR \
      --config.sparsity.method=set --config.sparsity.sparsity=0.95
"""

from __future__ import annotations

import math

import ml_collections

from configs import cpu_lenet300_fashion_mnist

NUM_EPOCHS = 5.0
SEEDS = (0, 1, 2)
SPARSITIES = (0.8, 0.9, 0.95, 0.98)
DISTRIBUTIONS = ('uniform', 'erk')
SPARSE_METHODS = ('static', 'set', 'snfs', 'rigl', 'pruning')
LONG_METHODS = ('rigl', 'static')  # also trained 2x as long
SINCE_RIGL = ('srigl', 'granet', 'topkast')
SINCE_RIGL_SPARSITIES = (0.9, 0.95, 0.98)
HIDDEN = (300, 100)
INPUTS, CLASSES = 784, 10


def kernel_weights(hidden: tuple[int, ...]) -> int:
  """Kernel weights (no biases) of the 784-hidden...-10 MLP."""
  sizes = (INPUTS, *hidden, CLASSES)
  return sum(a * b for a, b in zip(sizes, sizes[1:]))


def small_dense_widths(sparsity: float) -> tuple[int, int]:
  """Hidden widths (300k, 100k) whose kernel weights are closest to
  LeNet-300-100's non-zeros at ``sparsity``: solves
  ``784*300k + 300k*100k + 100k*10 = (1 - sparsity) * 266200`` for k and
  rounds (at least one unit per layer)."""
  target = (1.0 - sparsity) * kernel_weights(HIDDEN)
  a = HIDDEN[0] * HIDDEN[1]
  b = INPUTS * HIDDEN[0] + HIDDEN[1] * CLASSES
  k = (-b + math.sqrt(b * b + 4 * a * target)) / (2 * a)
  return tuple(max(1, round(h * k)) for h in HIDDEN)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  config = cpu_lenet300_fashion_mnist.get_config(arg)
  config.num_epochs = NUM_EPOCHS
  config.model.name = 'mlp'
  config.model.kwargs = ml_collections.ConfigDict(
      {'hidden_sizes': HIDDEN})
  # Initial masks from config.seed (paper.sparsity_config pins them to 0).
  config.sparsity.seed = ml_collections.config_dict.placeholder(int)
  config.log_every_steps = 50
  config.checkpoint_every_steps = 0  # one checkpoint, at the end
  config.keep_checkpoints = 1
  return config


def _base(seed: int, multiplier: float = 1.0) -> dict:
  return {'sparsity.method': 'dense', 'sparsity.distribution': 'erk',
          'sparsity.sparsity': 0.0, 'training_multiplier': multiplier,
          'model.kwargs.hidden_sizes': [HIDDEN], 'seed': seed}


def _grid(seed: int) -> list[dict]:
  """Dense, small-dense and every sparse method at 1x, one seed."""
  runs = [_base(seed)]
  for s in SPARSITIES:
    runs.append(dict(_base(seed), **{'model.kwargs.hidden_sizes':
                                     [small_dense_widths(s)]}))
  runs.append(dict(_base(seed), **{
      'sparsity.method': list(SPARSE_METHODS),
      'sparsity.distribution': list(DISTRIBUTIONS),
      'sparsity.sparsity': list(SPARSITIES)}))
  return runs


def _long(seed: int, distribution: str) -> list[dict]:
  """RigL and Static at 2x, one seed and distribution, and dense at 2x (the
  same run in either distribution's sweep: it is trained once)."""
  return [_base(seed, 2.0), dict(_base(seed, 2.0), **{
      'sparsity.method': list(LONG_METHODS),
      'sparsity.distribution': distribution,
      'sparsity.sparsity': list(SPARSITIES)})]


def _since_rigl(seed: int) -> list[dict]:
  """SRigL, GraNet and Top-KAST at 90-98% ERK, one seed."""
  return [dict(_base(seed), **{
      'sparsity.method': list(SINCE_RIGL),
      'sparsity.sparsity': list(SINCE_RIGL_SPARSITIES)})]


def get_sweep(name: str | None = None) -> list[dict]:
  """The evidence sweep (a tuple value is wrapped in a list:
  `experiments.sweep.expand` reads a bare tuple as a list of values).

  Args:
    name: None: everything, in the order below; 'grid': the 1x runs of
      every seed, seed by seed (135 runs); 'long_erk' / 'long_uniform': RigL
      and Static at 2x with that distribution, and dense at 2x, every seed
      (27 runs each, the 3 dense ones shared); 'since_rigl': SRigL,
      GraNet and Top-KAST at 90/95/98% ERK, seed by seed (27 runs);
      'smoke': 3 short checks (dense, RigL and SET at 90% ERK, seed 0).
  """
  if name == 'smoke':
    return [_base(0), dict(_base(0), **{'sparsity.method': ['rigl', 'set'],
                                        'sparsity.sparsity': 0.9})]
  parts = {
      'grid': [r for seed in SEEDS for r in _grid(seed)],
      'long_erk': [r for seed in SEEDS for r in _long(seed, 'erk')],
      'long_uniform': [r for seed in SEEDS for r in _long(seed, 'uniform')],
      'since_rigl': [r for seed in SEEDS for r in _since_rigl(seed)],
  }
  if name is None:
    return [r for part in parts.values() for r in part]
  if name not in parts:
    raise ValueError(f'unknown sweep {name!r}; valid: {sorted(parts)}, '
                     "'smoke' or None")
  return parts[name]
