"""IMP with rewinding on Fashion-MNIST, LeNet-300-100 (2-core CPU, minutes).

Iterative magnitude pruning (Frankle & Carbin 2019; Frankle et al. 2019):
train, prune 20% of the remaining weights by global magnitude, rewind
weights and BN state to step ``imp.rewind_step`` with a fresh optimizer whose
learning-rate schedule starts at that step (open_lth), retrain with the new
mask (static sparse training); ``imp.rounds`` times. ``imp.controls``
adds open_lth's control branches ('random_reinit', 'random_mask'). Round n has sparsity 1 - 0.8^n of the kernels
(n = 10: 89.3%, 12: 93.1%).

Usage:
  python main.py --config configs/imp_fashion_mnist.py --workdir /tmp/imp

Knobs: ``imp.rounds``, ``imp.prune_fraction``, ``imp.scope`` ('global' or
'layer'), ``imp.rewind_step`` (0: the original LTH; ~1 epoch = 468 steps
here), ``num_epochs`` per round. Kernels are prunable, biases are not
(``sparsity.is_sparse`` picks other leaves).

Expected (measured on a 2-core CPU, 2 min): dense round 0 89.1% test
accuracy; tickets at 90.0-90.4% from 49% to 89% sparsity (89.3%: 90.1%),
93.1%: 89.9%; with --config.imp.rounds=18, 98.2%: 89.1%. RigL (ERK) with
one 5-epoch run: 90%: 88.0%, 99%: 84.4%.
"""

import ml_collections

from configs import default


def get_config() -> ml_collections.ConfigDict:
  config = default.get_config()
  config.ticket_search = 'imp'
  config.model.name = 'lenet_300_100'
  config.model.kwargs = {}
  config.num_epochs = 5.0  # per round
  # Ticket searches train static masks; only is_sparse is read from here.
  config.sparsity.method = 'static'
  config.sparsity.sparsity = 0.0
  config.sparsity.distribution = 'uniform'
  # Checkpoints after every round (a round takes seconds); rerunning the
  # command resumes the search.
  config.checkpoint_every_steps = 0

  config.imp = ml_collections.ConfigDict()
  config.imp.rounds = 12
  config.imp.prune_fraction = 0.2
  config.imp.scope = 'global'
  config.imp.rewind_step = 0
  # open_lth's control branches, trained at every round: 'random_reinit',
  # 'random_mask' (off by default).
  config.imp.controls = ()
  return config
