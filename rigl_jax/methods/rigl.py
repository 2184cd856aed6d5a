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


def rigl(grow_init: str = 'zeros', noise_std: float = base.DROP_NOISE_STD,
         rigl_acc_scale: float = 0.0) -> base.Method:
  """Gradient-magnitude regrowth; the mask update replaces the step.

  Args:
    grow_init: what new connections start at: `base.GROW_INITS` or, as in
      the reference's `SparseRigLOptimizerBase.get_grow_tensor`
      (sparse_optimizers_base.py:540-553), ``'grad_scale'`` / ``'grad_sign'``
      (the dense gradient or its sign, optionally ``_K``-divided).
    noise_std: std of the noise on the drop scores (`base.DropAndGrow`).
    rigl_acc_scale: the optimizer state of new connections (every state
      leaf shaped like the params: momentum) starts at this times the dense
      gradient instead of 0: the reference's ``initial_acc_scale``
      (`reset_momentum`, lines 555-564), meant for momentum SGD, with a
      value between 0 and 1 / (1 - momentum). 0 (default): zeros. With
      Adam it sets the second moment to a multiple of the gradient too, as
      the reference sets every slot: negative entries, NaN updates (the
      mask update then stops training with a message that says so).

  Returns:
    The method.
  """
  return base.DropAndGrow(
      'rigl', gradient_scores, skips_weight_update=True, grow_init=grow_init,
      grow_inits=base.ALL_GROW_INITS,
      noise_std=noise_std, acc_scale=rigl_acc_scale)
