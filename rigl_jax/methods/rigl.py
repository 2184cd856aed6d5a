"""RigL: grow where the dense gradient is largest (Evci et al., ICML 2020).

The gradient of the loss w.r.t. the masked weights is dense: it is non-zero
at inactive positions too, and its magnitude there says how fast the loss
would fall if that connection existed (Algorithm 1 of the paper).
"""

import jax.numpy as jnp

from rigl_jax.methods import base


def gradient_scores(weight, grad, aux, key):
  """|dL/dtheta|, the dense gradient's magnitude."""
  del weight, aux, key
  return jnp.abs(grad)


def rigl() -> base.Method:
  """Gradient-magnitude regrowth; the mask update replaces the step."""
  return base.DropAndGrow('rigl', gradient_scores, skips_weight_update=True)
