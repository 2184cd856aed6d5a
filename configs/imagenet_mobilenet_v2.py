"""MobileNet v2 on ImageNet-2012, as in the RigL paper (Section 4.1, Fig. 3).

Targets: the paper's Figure 3 compares RigL with pruning on MobileNet v2 at
75% and 90% sparsity (uniform, first layer dense; depthwise kernels are
sparse too) and 'big-sparse' width multipliers; RigL 5x at 75% comes within
about a point of the dense model at a fraction of its FLOPs. Read the
figure for the exact points; `python -m rigl_jax.analysis --config` gives
the FLOPs axis.

Setup as configs/imagenet_resnet50.py (the reference trains MobileNets with
the ResNet-50 recipe: batch 4096, 32k steps at 1x, lr 0.1 per 256 with
warmup and step decay, label smoothing 0.1), with weight decay 4e-5.
Width: `--config.model.kwargs.width_multiplier=1.98` gives the paper's
'big-sparse' models.

Usage:
  python main.py --config configs/imagenet_mobilenet_v2.py:method=rigl,dist=uniform,sparsity=0.75 --workdir DIR
"""

from configs import imagenet_mobilenet_v1


def get_config(arg: str | None = None):
  return imagenet_mobilenet_v1.mobilenet_config(2, arg)
