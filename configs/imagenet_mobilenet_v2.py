"""MobileNet v2 on ImageNet-2012, as in the RigL paper (Section 4.1, Fig. 3).

Targets: the paper's Figure 3 compares RigL with pruning on MobileNet v2 at
75% and 90% sparsity and 'big-sparse' width multipliers; RigL 5x at 75%
comes within about a point of the dense model at a fraction of its FLOPs.
Read the figure for the exact points; `python -m rigl_jax.analysis --config`
gives the FLOPs axis.

Setup as configs/imagenet_mobilenet_v1.py (the reference gives both
MobileNets the same schedule, google-research/rigl
rigl/imagenet_resnet/imagenet_train_eval.py:283-284): warm-up over 8
epochs, then x1/x0.1/x0.01/x0.001/x0.0003 from epochs 8/40/75/95/120, epochs
x `mult`; the first conv and the depthwise kernels dense
(mobilenetv2_model.py:293-303, :81-92); weight decay 4e-5 (not from the
code). Width: `--config.model.kwargs.width_multiplier=1.98` gives the
paper's 'big-sparse' models.

Usage:
  python main.py --config configs/imagenet_mobilenet_v2.py:method=rigl,dist=uniform,sparsity=0.75 --workdir DIR
"""

from configs import imagenet_mobilenet_v1


def get_config(arg: str | None = None):
  return imagenet_mobilenet_v1.mobilenet_config(2, arg)
