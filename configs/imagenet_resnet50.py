"""ResNet-50 on ImageNet-2012, as in the RigL paper (Section 4.1, Table 2).

Targets (top-1 %, paper Table 2 / the official README; dense 76.8):
  80%: RigL ERK 75.1 (1x), 77.1 (5x); RigL uniform 74.6 (1x), 76.6 (5x);
       Static uniform 70.6; SET uniform 72.9; SNFS uniform 74.2;
       pruning (Gale et al.) 75.6.
  90%: RigL ERK 73.0 (1x), 76.4 (5x); RigL uniform 72.0 (1x), 75.7 (5x);
       pruning 73.9.
FLOPs (python -m rigl_jax.analysis --config THIS_FILE:...): 80% ERK 0.42x
inference, 2.09x training at 5x; 80% uniform 0.23x / 1.14x.

Setup from the reference code: batch 4096, 32k steps (~100 epochs) at 1x,
SGD momentum 0.9, lr 0.1 per 256 examples with 5 epochs of warmup and x0.1
at epochs 30, 70, 90, weight decay 1e-4, label smoothing 0.1; mask updates
every 100 steps until 75% of training, drop fraction 0.3 (cosine);
uniform keeps the first conv dense; pruning from step 10k to 25k every 1k
(scaled with the training length).

Usage (needs ImageNet prepared for tfds, and accelerators):
  python main.py --config configs/imagenet_resnet50.py:method=rigl,dist=erk,sparsity=0.8,mult=5 --workdir DIR
"""

from configs import default
from configs import paper


def get_config(arg: str | None = None):
  a = paper.parse(arg, method='rigl', dist='erk', sparsity='0.8', mult='1')
  config = default.get_config()
  config.data = default.default_data_config('imagenet2012')
  config.data.batch_size = 4096
  config.model.name = 'resnet50'
  config.model.kwargs = {}
  steps = 32_000
  config.num_train_steps = steps
  config.training_multiplier = a['mult']
  scale = lambda s: int(s * a['mult'])
  config.sparsity = paper.sparsity_config(
      a['method'], a['dist'], a['sparsity'], update_freq=100,
      first_layer='conv_init/kernel',
      pruning_steps=(scale(10_000), scale(25_000), scale(1_000)))
  opt = config.optimizer
  opt.learning_rate = 0.1
  opt.lr_reference_batch_size = 256
  opt.momentum = 0.9
  opt.nesterov = False
  opt.weight_decay = 1e-4
  opt.label_smoothing = 0.1
  opt.schedule = 'step'
  opt.warmup_fraction = 0.05
  opt.step_decay_at = (0.3, 0.7, 0.9)
  opt.step_decay_factor = 0.1
  config.log_every_steps = 100
  config.checkpoint_every_steps = 2000
  config.eval_split = 'validation'
  return config
