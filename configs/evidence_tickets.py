"""Evidence sweep: IMP and CS ticket searches at the Fashion-MNIST budget.

configs/imp_fashion_mnist.py and configs/cs_fashion_mnist.py (LeNet-300-100)
with every training (each IMP round, each CS search round and ticket) as
long as one run of configs/evidence_fashion_mnist.py. IMP prunes 20% of
the remaining weights per round for 18 rounds (98.2% sparsity); CS tries
lambdas from 1e-7 to 1e-5 (74% to 99% sparsity here). A ticket search
costs many trainings (IMP round n: n + 1; CS: 3 per lambda), so its points
are not at the budget of the other methods: they show what the best known
mask finders reach, as in the paper's comparisons with pruning.

Usage:
  python experiments/run_evidence.py --config configs/evidence_tickets.py:imp \
      --root experiments/results/fashion_mnist/tickets_imp
  (and :cs with .../tickets_cs)
"""

from __future__ import annotations

import ml_collections

from configs import cs_fashion_mnist
from configs import evidence_fashion_mnist
from configs import imp_fashion_mnist


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """``arg``: 'imp' (default) or 'cs'."""
  if arg in (None, '', 'imp'):
    config = imp_fashion_mnist.get_config()
    config.imp.rounds = 18
  elif arg == 'cs':
    config = cs_fashion_mnist.get_config()
  else:
    raise ValueError(f"unknown ticket search {arg!r}; valid: 'imp', 'cs'")
  config.num_epochs = evidence_fashion_mnist.NUM_EPOCHS
  return config


def get_sweep(name: str | None = None) -> dict:
  """One search, seed 0."""
  del name
  return {'seed': [0]}
