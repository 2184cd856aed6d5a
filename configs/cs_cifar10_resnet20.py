"""Continuous Sparsification ticket search on CIFAR-10, ResNet-20 (a GPU).

Savarese, Silva & Maire (NeurIPS 2020): mask logits s per kernel entry,
initialised to s0 = ``cs.mask_init``; the search trains
w * sigmoid(beta s) / sigmoid(s0) with loss
+ lambda * sum(sigmoid(beta s) / sigmoid(s0)); beta grows per epoch to 200
at the end of each round; between rounds logits above s0 are reset to s0
(weights are not rewound; both optimizers keep their momentum). The ticket
w * 1[s > 0] / sigmoid(s0) is retrained from the weights of step
``cs.rewind_step`` (the CS code rewinds to epoch 2) with a fresh optimizer
over the whole schedule.

Setup as in the authors' CIFAR code (lolemacs/continuous-sparsification
main.py:14-31, 110-123): batch 128, 85 epochs per round, 3 rounds, SGD
with Nesterov momentum 0.9, lr 0.1 divided by 10 at epochs 56 and 71,
weight decay 1e-4 on the weights only; the logits use SGD with Nesterov
momentum 0.9 at lr 0.1 on the same schedule, without weight decay. Only the
3x3 convolutions are masked (`SoftMaskedConv2d`, models/networks.py:32-34,
71, 80): not the 1x1 projection shortcuts (line 53) nor the classifier.

Knobs: ``cs.lambdas`` (one search + ticket each; larger -> sparser; the
authors' code defaults to 1e-8; the values here are untuned: the pull of
the penalty accumulates over the steps of a round, so longer rounds need
smaller values than the Fashion-MNIST config) and ``cs.mask_init`` (s0;
smaller -> sparser; the CS README: 0.0 default, -0.1 for high sparsity),
``cs.rounds``, ``cs.final_temperature``. CS reaches no set sparsity:
results.json records what each lambda reached.

Expected: the paper reports CS ResNet-20 tickets matching or beating IMP
with rewinding across sparsities, with far fewer rounds; dense ResNet-20 is
about 91-92%. Not measured here (no GPU run of this config yet).

Usage (CIFAR-10 prepared for tfds; set --config.data.tfds_data_dir):
  python main.py --config configs/cs_cifar10_resnet20.py --workdir DIR
"""

import ml_collections

from configs import imp_cifar10_resnet20


def get_config() -> ml_collections.ConfigDict:
  config = imp_cifar10_resnet20.get_config()
  del config.imp
  config.ticket_search = 'cs'
  config.cs = ml_collections.ConfigDict()
  config.cs.lambdas = (1e-9, 1e-8, 1e-7)  # the authors' default: 1e-8
  config.cs.mask_init = 0.0
  config.cs.final_temperature = 200.0
  config.cs.rounds = 3
  config.cs.rewind_step = 782  # 2 epochs of 391 steps
  config.cs.mask_lr = 0.1
  config.cs.mask_momentum = 0.9
  config.cs.mask_nesterov = True
  config.optimizer.nesterov = True
  # The 3x3 convolutions only (conv_init and the blocks' conv1 / conv2).
  config.sparsity.is_sparse = ('conv_init/kernel',
                               r'stage\d+_block\d+/conv[12]/kernel')
  return config
