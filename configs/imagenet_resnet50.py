"""ResNet-50 on ImageNet-2012, as in the RigL paper (Section 4.1, Table 2).

Targets (top-1 %, paper Table 2 / the official README; dense 76.8):
  80%: RigL ERK 75.1 (1x), 77.1 (5x); RigL uniform 74.6 (1x), 76.6 (5x);
       Static uniform 70.6; SET uniform 72.9; SNFS uniform 74.2;
       pruning (Gale et al.) 75.6.
  90%: RigL ERK 73.0 (1x), 76.4 (5x); RigL uniform 72.0 (1x), 75.7 (5x);
       pruning 73.9.
FLOPs (python -m rigl_jax.analysis --config THIS_FILE:...): 80% ERK 0.42x
inference, 2.09x training at 5x; 80% uniform 0.23x / 1.14x.

Setup from the reference code (google-research/rigl,
rigl/imagenet_resnet/imagenet_train_eval.py, cited by line below): SGD with
Nesterov momentum 0.9, lr 0.1 per 256 examples, no warm-up, x0.1 at epochs
30, 70, 90 (and 120) of the reference's epochs (1,281,167 / batch steps),
all scaled by `mult`; weight decay 1e-4, label smoothing 0.1; mask updates
every 100 steps from step 0 to 25000 x `mult`, drop fraction 0.3. Uniform
keeps the first conv dense; ERK sparsifies it too, except at 99% (the
official README). Batch 4096 and 32k steps at 1x (~102 epochs) are the
paper's; the reference's flags default to 1024 and leave the steps to the
command line (its README's 100x checkpoint is `model.ckpt-3200000`).

Where the paper and the code differ: the drop-fraction schedule is cosine
as the paper states (Section 4); the reference's `--drop_fraction_anneal`
flag defaults to 'constant' and the README has no training command lines.
Gradual pruning (10k to 25k every 1k steps, x `mult`) is not in the
reference's ImageNet script (it has no pruning method); it follows the
paper's use of Gale et al.'s schedule and is not checked against code.

Usage (needs ImageNet prepared for tfds, and accelerators):
  python main.py --config configs/imagenet_resnet50.py:method=rigl,dist=erk,sparsity=0.8,mult=5 --workdir DIR
"""

from __future__ import annotations

from collections.abc import Sequence

from configs import default
from configs import paper

# Training images; an epoch is this / batch steps (a float), as in
# rigl/imagenet_resnet/imagenet_train_eval.py:140,352.
NUM_TRAIN_IMAGES = 1_281_167
BATCH_SIZE = 4096  # the paper's; the reference flag defaults to 1024 (:136)
STEPS_1X = 32_000  # the paper's 100 epochs (~102.3 at batch 4096)
# (multiplier, start epoch) pairs: imagenet_train_eval.py:287. A start of 0
# means no warm-up (:325-329: the ramp only covers epochs < start).
RESNET_LR_SCHEDULE = ((1.0, 0), (0.1, 30), (0.01, 70), (0.001, 90),
                      (0.0001, 120))
FIRST_LAYER = 'conv_init/kernel'


def lr_schedule_in_steps(schedule: Sequence[tuple[float, float]],
                         batch_size: int = BATCH_SIZE
                         ) -> tuple[tuple[float, float], ...]:
  """The reference's (multiplier, start epoch) pairs as (multiplier, start
  step of the 1x run), for ``config.optimizer.step_multipliers``
  (imagenet_train_eval.py:352-354: epoch = step / (images / batch))."""
  steps_per_epoch = NUM_TRAIN_IMAGES / batch_size
  return tuple((float(m), e * steps_per_epoch) for m, e in schedule)


def imagenet_config(a: dict, *, model_name: str,
                    lr_schedule: Sequence[tuple[float, float]],
                    dense: Sequence[str] = ()):
  """The reference's ImageNet recipe for ``model_name``; ``a`` is the parsed
  argument (`paper.parse`), ``dense`` the kernels kept dense for every
  distribution."""
  config = default.get_config()
  config.data = default.default_data_config('imagenet2012')
  config.data.batch_size = BATCH_SIZE
  config.model.name = model_name
  config.model.kwargs = {}
  config.num_train_steps = STEPS_1X
  config.training_multiplier = a['mult']
  # The reference scales the train steps, the mask-update window and the LR
  # schedule's epochs with the multiplier, not the update frequency
  # (imagenet_train_eval.py:290-295).
  scale = lambda s: int(s * a['mult'])
  config.sparsity = paper.sparsity_config(
      a['method'], a['dist'], a['sparsity'],
      update_freq=100,  # imagenet_train_eval.py:244
      first_layer=FIRST_LAYER,  # uniform: dense (:246-250, :519; README.md:92)
      drop_fraction=0.3,  # imagenet_train_eval.py:224
      end_step=scale(25_000),  # imagenet_train_eval.py:243, :295
      dense=dense,
      pruning_steps=(scale(10_000), scale(25_000), scale(1_000)))
  # Mask updates begin at step 0 (sparsity_config): :242, :294.
  opt = config.optimizer
  opt.name = 'sgd'  # MomentumOptimizer: imagenet_train_eval.py:360
  opt.momentum = 0.9  # imagenet_train_eval.py:66-69
  opt.nesterov = True  # imagenet_train_eval.py:361
  opt.learning_rate = 0.1  # imagenet_train_eval.py:61-64
  opt.lr_reference_batch_size = 256  # imagenet_train_eval.py:319
  opt.schedule = 'step'
  opt.warmup_fraction = 0.0  # the warm-up is the first pair's start
  # imagenet_train_eval.py:317-330; epochs x mult: :290-292.
  opt.step_multipliers = lr_schedule_in_steps(lr_schedule)
  opt.weight_decay = 1e-4  # imagenet_train_eval.py:72-75
  opt.label_smoothing = 0.1  # imagenet_train_eval.py:123
  config.log_every_steps = 100
  config.checkpoint_every_steps = 2000
  config.eval_split = 'validation'
  return config


def get_config(arg: str | None = None):
  a = paper.parse(arg, method='rigl', dist='erk', sparsity='0.8', mult='1')
  # ERK sparsifies the first conv (README.md:89, --first_layer_sparsity=-1)
  # except for the 99% model (README.md:18-20).
  erk_99 = a['dist'] == 'erk' and a['sparsity'] >= 0.99
  dense = (FIRST_LAYER,) if erk_99 else ()
  return imagenet_config(a, model_name='resnet50',
                         lr_schedule=RESNET_LR_SCHEDULE, dense=dense)
