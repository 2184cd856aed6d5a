"""MobileNet v1 on ImageNet-2012, as in the RigL paper (Section 4.1, Fig. 3).

Targets: the paper's Figure 3 compares RigL with pruning on MobileNet v1 at
75% and 90% sparsity and 'big-sparse' width multipliers; RigL 5x at 75%
comes within about a point of the dense model at a fraction of its FLOPs.
Read the figure for the exact points; `python -m rigl_jax.analysis --config`
gives the FLOPs axis.

Setup from the reference code (google-research/rigl,
rigl/imagenet_resnet/imagenet_train_eval.py and mobilenetv1_model.py, cited
by line below): the ResNet-50 recipe of configs/imagenet_resnet50.py
(batch 4096, 32k steps at 1x, SGD with Nesterov momentum 0.9, lr 0.1 per
256, label smoothing 0.1, mask updates every 100 steps until 25000 x
`mult`) with the MobileNets' own learning-rate schedule: a linear warm-up
over 8 epochs, then x1 until epoch 40, x0.1 until 75, x0.01 until 95,
x0.001 until 120, x0.0003 after, epochs x `mult`. The first conv and the
depthwise kernels are never masked in the reference (plain TF layers), so
they stay dense for every method and distribution; the classifier is sparse.

Not from the code: weight decay 4e-5 (the reference has one
`--weight_decay` flag for every model, default 1e-4, logged per run in its
output folder); the reference also leaves the depthwise kernels out of the
L2 loss, which config.optimizer cannot express (it decays every kernel).
Width: `--config.model.kwargs.width_multiplier=1.98` gives the paper's
'big-sparse' models.

Usage:
  python main.py --config configs/imagenet_mobilenet_v1.py:method=rigl,dist=uniform,sparsity=0.75 --workdir DIR
"""

from __future__ import annotations

from configs import imagenet_resnet50
from configs import paper

# (multiplier, start epoch) pairs: imagenet_train_eval.py:283-284; the first
# start is the warm-up (:325-326).
MOBILENET_LR_SCHEDULE = ((1.0, 8), (0.1, 40), (0.01, 75), (0.001, 95),
                         (0.0003, 120))
# Kept dense for every method and distribution: the first conv
# (mobilenetv1_model.py:258-268, mobilenetv2_model.py:293-303) and the
# depthwise kernels (mobilenetv1_model.py:81-92, mobilenetv2_model.py:81-92).
DENSE = ('conv_init/kernel', 'block[0-9]+/dw_conv/kernel')


def mobilenet_config(version: int, arg: str | None):
  """The reference's MobileNet v``version`` recipe (shared by v1 and v2)."""
  a = paper.parse(arg, method='rigl', dist='uniform', sparsity='0.75',
                  mult='1')
  config = imagenet_resnet50.imagenet_config(
      a, model_name=f'mobilenet_v{version}',
      lr_schedule=MOBILENET_LR_SCHEDULE, dense=DENSE)
  config.model.kwargs = {'width_multiplier': 1.0}  # imagenet_train_eval.py:491
  config.optimizer.weight_decay = 4e-5  # not in the code (flag: 1e-4, :72-75)
  return config


def get_config(arg: str | None = None):
  return mobilenet_config(1, arg)
