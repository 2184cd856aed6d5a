"""SNIP: single-shot pruning by connection sensitivity (Lee et al., ICLR 2019).

The RigL paper's Table 2 baseline. The network starts dense; the first step
ranks every weight of a layer by its connection sensitivity |g * w| (the
dense gradient of that step's batch times the initial weight), keeps the
``size - floor(s * size)`` most sensitive (s: the layer's sparsity from the
distribution), and trains the resulting static mask from there. As in the
reference (`SparseSnipOptimizer`, google-research/rigl
rigl/sparse_optimizers.py:217-337), that first step sets the masks instead
of updating the weights, and the zero count is ``floor(s * size)``
(`sparse_utils.get_n_zeros`, rigl/sparse_utils.py:35-36).
"""

import jax
import jax.numpy as jnp
import numpy as np

from rigl_jax.methods import base


class Snip(base.Method):
  """Connection-sensitivity masks from the first step, then static."""
  name = 'snip'
  starts_dense = True
  skips_weight_update = True
  single_update = True
  training_cost = 'sparse'

  def update_masks(self, ctx: base.MaskContext):
    new, removed, total = [], 0, 0
    for w, g, m, s in zip(ctx.weights, ctx.grads, ctx.masks,
                          ctx.sparsities):
      size = int(np.prod(m.shape[1:]))
      n_keep = size - int(np.floor(s * size))
      scores = jnp.abs(g.astype(jnp.float32) * w.astype(jnp.float32))
      keep = jnp.full([m.shape[0]], n_keep, jnp.int32)
      new.append(jax.vmap(ctx.structure.prune)(scores, keep, m))
      removed += (size - n_keep) * m.shape[0]
      total += size * m.shape[0]
    return new, jnp.float32(removed / max(total, 1))


def snip() -> base.Method:
  """Single-shot connection-sensitivity pruning at the first step."""
  return Snip()
