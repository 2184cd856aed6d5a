"""Top-KAST: top-K always sparse training.

*Top-KAST: Top-K Always Sparse Training* (Jayakumar, Pascanu, Rae, Osindero,
Elsen, NeurIPS 2020). The authors published no code; this follows the
paper:

* The parameters θ are kept dense (here in the optimizer state, as the
  paper keeps them in host memory or a sharded store); the model sees
  α = θ ⊙ 1_A, where the forward set A holds each layer's top-D weights by
  magnitude (D = 1 - the layer's sparsity).
* The backward set B ⊇ A holds the top-(D + M) by magnitude
  (``topkast_backward_sparsity`` = 1 - (D + M), per layer in proportion to
  the forward density: ``min(1, D * (1 - s_B) / (1 - s))``). The gradient
  with respect to α updates θ on B only; weights outside B keep their
  values (and can re-enter when others shrink).
* Exploration penalty (Sec. 2.3): an L2 penalty on θ over B, with the
  weights in B \\ A scaled by 1/D, so that a weight outside the forward set
  must earn its gradient to enter it; here as its gradient
  ``topkast_penalty * w * θ`` (w = 1 on A, 1/D on B \\ A) added before the
  optimizer.
* A and B are recomputed from the magnitudes of θ on the mask schedule
  (every ``update_freq`` steps from ``begin_step`` to ``end_step``, after
  the step's update); the initial sets are the top-D and top-(D + M) of the
  initial weights.

Defaults: ``topkast_backward_sparsity=None`` gives backward density 2D (the
paper's (90%, 80%) and (95%, 90%) forward/backward pairs);
``topkast_penalty=1e-4``, the ImageNet weight decay (the paper gives no
separate value). Both sets follow the run's sparsity distribution.
"""

from __future__ import annotations

from typing import Optional

import jax.numpy as jnp

from rigl_jax.methods import base


class TopKAST(base.Method):
  """Top-KAST (see the module docstring).

  Args:
    backward_sparsity: the backward set's global sparsity, below the
      forward one (None: backward density twice the forward density).
    penalty: the exploration penalty's L2 scale (0: none).
  """
  name = 'topkast'
  keeps_dense_weights = True
  training_cost = 'topkast'

  def __init__(self, backward_sparsity: Optional[float] = None,
               penalty: float = 1e-4):
    if backward_sparsity is not None and not 0.0 <= backward_sparsity < 1.0:
      raise ValueError('topkast_backward_sparsity must be None or in [0, 1); '
                       f'got {backward_sparsity}')
    if penalty < 0:
      raise ValueError(f'topkast_penalty must be >= 0; got {penalty}')
    self.backward_sparsity = (None if backward_sparsity is None
                              else float(backward_sparsity))
    self.penalty = float(penalty)

  def validate(self, *, structure, custom_sparsity) -> None:
    if structure.sparsity is not None:
      raise ValueError('topkast keeps no N:M structure (its sets are the '
                       'top-K of each layer); drop structure=')

  def backward_sparsity_of(self, sparsity: float, global_sparsity: float
                           ) -> float:
    """A layer's backward-set sparsity from its forward sparsity.

    Example:
      >>> m = TopKAST(backward_sparsity=0.5)
      >>> round(m.backward_sparsity_of(0.8, 0.8), 6)
      0.5
      >>> TopKAST().backward_sparsity_of(0.9, 0.9)  # density 2 x 0.1
      0.8
    """
    density = 1.0 - sparsity
    if self.backward_sparsity is None:
      return max(0.0, 1.0 - 2.0 * density)
    if self.backward_sparsity > global_sparsity:
      raise ValueError(
          f'topkast_backward_sparsity {self.backward_sparsity} must not '
          f'exceed the forward sparsity {global_sparsity}')
    ratio = (1.0 - self.backward_sparsity) / (1.0 - global_sparsity)
    return round(max(0.0, 1.0 - min(1.0, density * ratio)), 12)

  def penalty_gradient(self, theta: jnp.ndarray, forward: jnp.ndarray,
                       backward: jnp.ndarray, density: float) -> jnp.ndarray:
    """The exploration penalty's gradient: ``penalty * w * θ`` with w = 1
    on A, 1/D on B \\ A, 0 elsewhere."""
    w = jnp.where(forward, 1.0, jnp.where(backward, 1.0 / max(density, 1e-12),
                                          0.0))
    return (self.penalty * w * theta).astype(theta.dtype)


def topkast_method(topkast_backward_sparsity: Optional[float] = None,
                   topkast_penalty: float = 1e-4) -> base.Method:
  """Top-KAST (Jayakumar et al. 2020): dense θ, forward top-D, backward
  top-(D+M), exploration penalty.

  Args:
    topkast_backward_sparsity: the backward set's global sparsity (None:
      twice the forward density).
    topkast_penalty: the exploration penalty's scale.

  Returns:
    The method.
  """
  return TopKAST(topkast_backward_sparsity, topkast_penalty)
