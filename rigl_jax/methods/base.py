"""What a sparse-training method is: a kind and a rule to score connections.

Scheduling (`schedules`), dropping by magnitude, state reset and masking are
shared by all methods (`transform`); a method only says how it scores the
connections it may grow, and which auxiliary state it keeps for that.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple, Optional

import jax

# (param, dense_grad, aux_leaf, key) -> non-negative grow scores.
GrowScore = Callable[[jax.Array, jax.Array, Any, jax.Array], jax.Array]

KINDS = ('dense', 'static', 'dst', 'pruning')


def no_aux(params: Any, masks: Any) -> Any:
  del params, masks
  return ()


def keep_aux(aux: Any, grads: Any, masks: Any) -> Any:
  del grads, masks
  return aux


class MaskMethod(NamedTuple):
  """A sparse-training method.

  Attributes:
    name: the method's name.
    kind: ``'dense'`` (no masks), ``'static'`` (fixed masks), ``'dst'``
      (dynamic sparse training: drop by magnitude, grow by ``grow_score``) or
      ``'pruning'`` (gradual magnitude pruning).
    grow_score: for ``'dst'``, scores of the positions that may be grown.
    init_aux: ``(params, masks) -> aux``: the method's own state.
    update_aux: ``(aux, dense_grads, masks) -> aux``, run on every step.
      When aux is a pytree shaped like the masks, ``grow_score`` receives
      the entry of its leaf; otherwise it receives None.
    redistribute: for ``'dst'``, regrow across layers in proportion to the mean
      aux magnitude of each layer's active weights (SNFS).
    global_scope: for ``'pruning'``, rank magnitudes over all sparse leaves
      together instead of per leaf.
    initial_sparsity: for ``'pruning'``, s_i in the cubic schedule.
  """
  name: str
  kind: str
  grow_score: Optional[GrowScore] = None
  init_aux: Callable[[Any, Any], Any] = no_aux
  update_aux: Callable[[Any, Any, Any], Any] = keep_aux
  redistribute: bool = False
  global_scope: bool = False
  initial_sparsity: float = 0.0
