"""WideResNet-22-8 on CIFAR-10, as in the RigL paper (Appendix, CIFAR-10).

Targets: the paper's CIFAR-10 figure (WRN-22-8)
shows RigL and SET close to pruning at 50-95% sparsity, RigL 2x on par with
or above it; the ML Reproducibility Challenge 2020 report measured, for
WRN-22-2 at 80% sparsity, RigL ERK 93.1% and SET ERK 92.9%. Training FLOPs
of each method come from `python -m rigl_jax.analysis --config`.

Setup from the reference CIFAR code: batch 128, 250 epochs, SGD momentum
0.9 (Nesterov), lr 0.1 decayed x0.2 at 30%, 60%, 80% of training, weight
decay 5e-4, no label smoothing; mask updates every 100 steps until 75% of
training, drop fraction 0.3 (cosine).

Usage (needs CIFAR-10 prepared for tfds; a GPU):
  python main.py --config configs/cifar10_wrn22_8.py:method=rigl,dist=erk,sparsity=0.9 --workdir DIR
"""

from configs import default
from configs import paper


def get_config(arg: str | None = None):
  a = paper.parse(arg, method='rigl', dist='erk', sparsity='0.8', mult='1')
  config = default.get_config()
  config.data = default.default_data_config('cifar10')
  config.data.batch_size = 128
  config.model.name = 'wrn_22_8'
  config.model.kwargs = {}
  config.num_epochs = 250.0
  config.training_multiplier = a['mult']
  config.sparsity = paper.sparsity_config(
      a['method'], a['dist'], a['sparsity'], update_freq=100,
      first_layer='conv_init/kernel',
      pruning_steps=None)
  opt = config.optimizer
  opt.learning_rate = 0.1
  opt.momentum = 0.9
  opt.nesterov = True
  opt.weight_decay = 5e-4
  opt.label_smoothing = 0.0
  opt.schedule = 'step'
  opt.warmup_fraction = 0.0
  opt.step_decay_at = (0.3, 0.6, 0.8)
  opt.step_decay_factor = 0.2
  config.eval_split = 'test'
  return config
