"""IMP with rewinding on CIFAR-10, ResNet-20 (a GPU; CIFAR-10 via tfds).

Frankle et al. (2019, 2020) find ResNet-20 tickets by iterative magnitude
pruning with rewinding: train, prune 20% of the remaining weights by global
magnitude, rewind weights, BN state and optimizer state / learning-rate
schedule to an early step k, retrain; repeat. With k = 0 (the original
LTH) ResNet-20 tickets fall behind; rewinding to a few epochs in recovers
them. Round n has sparsity 1 - 0.8^n of the kernels (n = 10: 89.3%).

Setup (the CS paper's CIFAR schedule, used for both searches here): batch
128, 85 epochs per round, SGD momentum 0.9, lr 0.1 divided by 10 at epochs
56 and 71, weight decay 1e-4, no label smoothing; every kernel (convs,
1x1 shortcuts, the classifier) is prunable; rewind to step 2000 (~5 epochs).

Expected: dense ResNet-20 about 91-92% test accuracy; the ticket papers
report IMP-with-rewinding tickets close to that to roughly 80-90% sparsity,
declining beyond. Not measured here (no GPU run of this config yet).

Usage (CIFAR-10 prepared for tfds; set --config.data.tfds_data_dir):
  python main.py --config configs/imp_cifar10_resnet20.py --workdir DIR
Knobs: imp.rounds, imp.prune_fraction, imp.scope, imp.rewind_step,
num_epochs (per round).
"""

import ml_collections

from configs import default


def get_config() -> ml_collections.ConfigDict:
  config = default.get_config()
  config.ticket_search = 'imp'
  config.data = default.default_data_config('cifar10')
  config.data.batch_size = 128
  config.model.name = 'resnet20'
  config.model.kwargs = {}
  config.num_epochs = 85.0  # per round
  # Ticket searches train static masks; only is_sparse is read from here.
  config.sparsity.method = 'static'
  config.sparsity.sparsity = 0.0
  config.sparsity.distribution = 'uniform'

  opt = config.optimizer
  opt.learning_rate = 0.1
  opt.momentum = 0.9
  opt.nesterov = False
  opt.weight_decay = 1e-4
  opt.label_smoothing = 0.0
  opt.schedule = 'step'
  opt.warmup_fraction = 0.0
  opt.step_decay_at = (56 / 85, 71 / 85)
  opt.step_decay_factor = 0.1
  # A search checkpoints after every round and every 2000 steps inside one;
  # rerunning the command resumes it.
  config.checkpoint_every_steps = 2000
  config.log_every_steps = 1000

  config.imp = ml_collections.ConfigDict()
  config.imp.rounds = 10
  config.imp.prune_fraction = 0.2
  config.imp.scope = 'global'
  config.imp.rewind_step = 2000
  # open_lth's control branches, trained at every round: 'random_reinit',
  # 'random_mask' (off by default).
  config.imp.controls = ()
  return config
