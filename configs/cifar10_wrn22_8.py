"""WideResNet-22-8 on CIFAR-10, as in the RigL paper (Appendix, CIFAR-10).

Targets: the paper's CIFAR-10 figure (WRN-22-8)
shows RigL and SET close to pruning at 50-95% sparsity, RigL 2x on par with
or above it; the ML Reproducibility Challenge 2020 report measured, for
WRN-22-2 at 80% sparsity, RigL ERK 93.1% and SET ERK 92.9%. Training FLOPs
of each method come from `python -m rigl_jax.analysis --config`.

Setup from the reference CIFAR code (google-research/rigl,
rigl/cifar_resnet/resnet_train_eval.py, cited by line below): batch 128,
97,656 steps (250 epochs), SGD with Nesterov momentum 0.9, lr 0.1 x0.2 at
steps 30k, 60k, 90k, weight decay 5e-4, no label smoothing; the first conv
dense for every method and distribution; mask updates every 100 steps from
0 to 75k, drop fraction 0.3; gradual pruning from 20k to 75k every 1k
steps. `mult` scales the steps, the learning-rate boundaries and the begin
and end of mask updates and pruning, not their frequencies (:477-483).

Where the paper and the code differ: the drop-fraction schedule is cosine
as the paper states; the reference's `--drop_fraction_anneal` flag defaults
to 'constant' (:103). The reference's `tf.train.piecewise_constant` drops
the learning rate one step later than here (at step > boundary, :196-200).

Usage (needs CIFAR-10 prepared for tfds; a GPU):
  python main.py --config configs/cifar10_wrn22_8.py:method=rigl,dist=erk,sparsity=0.9 --workdir DIR
"""

from configs import default
from configs import paper

# (multiplier, start step) pairs: 0.1 / 5**i from steps 0, 30k, 60k, 90k
# (resnet_train_eval.py:189, :196-200), scaled with mult (:190-192).
LR_SCHEDULE = ((1.0, 0), (0.2, 30_000), (0.04, 60_000), (0.008, 90_000))


def get_config(arg: str | None = None):
  a = paper.parse(arg, method='rigl', dist='erk', sparsity='0.8', mult='1')
  config = default.get_config()
  config.data = default.default_data_config('cifar10')
  config.data.batch_size = 128  # resnet_train_eval.py:71
  config.model.name = 'wrn_22_8'
  config.model.kwargs = {}
  config.num_train_steps = 97_656  # resnet_train_eval.py:61-62
  config.training_multiplier = a['mult']  # resnet_train_eval.py:477-479
  scale = lambda s: int(s * a['mult'])  # resnet_train_eval.py:480-483
  config.sparsity = paper.sparsity_config(
      a['method'], a['dist'], a['sparsity'],
      update_freq=100,  # resnet_train_eval.py:120
      first_layer=None,
      drop_fraction=0.3,  # resnet_train_eval.py:100
      end_step=scale(75_000),  # resnet_train_eval.py:119, :481
      # prune_first_layer=False: resnet_train_eval.py:96-97, :351;
      # resnet_model.py:96-103.
      dense=('conv_init/kernel',),
      # sparsity_begin_step, sparsity_end_step (scaled: :482-483) and
      # pruning_frequency (not scaled): resnet_train_eval.py:83-85.
      pruning_steps=(scale(20_000), scale(75_000), 1_000))
  # Mask updates begin at step 0 (sparsity_config): resnet_train_eval.py:118.
  opt = config.optimizer
  opt.name = 'sgd'  # MomentumOptimizer: resnet_train_eval.py:202
  opt.momentum = 0.9  # resnet_train_eval.py:60
  opt.nesterov = True  # resnet_train_eval.py:203
  opt.learning_rate = 0.1  # resnet_train_eval.py:199
  opt.schedule = 'step'
  opt.warmup_fraction = 0.0  # no warm-up: resnet_train_eval.py:196-200
  opt.step_multipliers = LR_SCHEDULE
  opt.weight_decay = 5e-4  # resnet_train_eval.py:63, :331-332
  opt.label_smoothing = 0.0  # resnet_train_eval.py:414-415
  config.eval_split = 'test'
  return config
