"""SRigL: RigL with a constant fan-in (Lasby et al., ICLR 2024).

*Dynamic Sparse Training with Structured Sparsity* (Lasby, Golubeva, Evci,
Nica, Ioannou). Every output neuron of a sparse layer keeps the same number
``k`` of inputs, so the layer can be stored and run *condensed* (values and
input indices per neuron, `rigl_jax.deploy`), and neurons with too few
salient weights are ablated, their budget going to the others.

The rules follow the authors' code (calgaryml/condensed-sparsity,
``src/rigl_torch/rigl_constant_fan.py``, cited as RCF:line below, at
3052bb8), in Flax layout: a layer's neurons are its last axis and its
fan-in every other axis (a dense kernel ``(in, out)``, a conv kernel
``(h, w, c_in, c_out)``), so neuron ``j`` is the column ``x[..., j]``.

* Budget: the layer's ``B = N - floor(s * N)`` active weights (its
  distribution's sparsity ``s``); initial masks give every neuron exactly
  ``k = B // n_out`` random inputs (RCF:136-185; rigl_utils.py:305-321).
* Mask update (RCF:235-362), with ``f`` RigL's cosine drop fraction:
  ``n_prune = floor(f * nnz)``, ``n_keep = nnz - n_prune``.

  1. Ablation (RCF:364-479): a weight is salient if it is among the layer's
     ``n_keep`` largest |w| or its ``n_prune`` largest |grad| (over every
     position). A neuron with fewer salient weights than
     ``max(1, int(gamma * (B // n_out)))`` (``gamma >= 1``: that count) is
     ablated, but at least ``B // fan_in + 1`` neurons stay (the threshold
     drops to the count of the neuron at that rank), so
     ``k' = B // n_active <= fan_in``. Ablation is decided afresh at every
     update: an ablated neuron can come back.
  2. Drop (RCF:481-532): the ``n_keep`` largest |w| of the layer's active
     weights in live neurons, then each neuron keeps at most ``k'`` of
     them, its largest (the reference keeps the first ``k'`` in the order
     of a sort of the boolean mask, which is arbitrary; this is its
     intent).
  3. Grow (RCF:534-622): every live neuron grows its largest |grad|
     positions outside what it kept until it has exactly ``k'``; ablated
     neurons have none.

  As in the authors' code, the optimizer step is applied first and the
  masks change on the stepped weights (their scheduler runs after
  ``optimizer.step()``, train_rigl.py:357-362; the TF RigL replaces the
  step instead), and the drop scores carry no noise.

Not ported: the gradient averaged over the ``grad_accumulation_n`` steps
before an update (1 in the CIFAR configs; 8 at ImageNet emulates batch 4096
with batch 512: use the larger batch), and the per-neuron sparse re-init of
the weights (``grad_flow_init``, whose std is 2/fan_in where the Gradient
Flow paper has sqrt(2/fan_in)).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from rigl_jax import distributions
from rigl_jax import mask_update
from rigl_jax import selection
from rigl_jax.methods import base

# gamma_sal: the paper's minimum fraction of salient weights a neuron keeps
# (configs/config.yaml: min_salient_weights_per_neuron 0.3; 0.95 for ViT).
MIN_SALIENT_DEFAULT = 0.3


def _rows(x: jax.Array) -> jax.Array:
  """A layer ``(..., n_out)`` as neuron rows ``(n_out, fan_in)``."""
  return x.reshape(-1, x.shape[-1]).T


def _unrows(rows: jax.Array, shape: tuple[int, ...]) -> jax.Array:
  return rows.T.reshape(shape)


def layer_budget(shape: tuple[int, ...], sparsity: float) -> int:
  """The active weights ``B`` of a layer of ``shape`` at ``sparsity``."""
  return math.prod(shape) - distributions.num_zeros(tuple(shape), sparsity)


def fan_in(shape: tuple[int, ...]) -> int:
  return math.prod(shape) // shape[-1]


def row_top_k(scores: jax.Array, k: jax.Array,
              valid: jax.Array | None = None) -> jax.Array:
  """The ``k[i]`` largest entries of every row ``i`` (ties by position)."""
  return selection.segment_top_k(scores, list(range(scores.shape[0])), k,
                                 valid)


def random_mask(key: jax.Array, shape: tuple[int, ...],
                sparsity: float) -> jax.Array:
  """A random constant fan-in mask: ``B // n_out`` inputs per neuron.

  Example:
    >>> import jax
    >>> m = random_mask(jax.random.PRNGKey(0), (8, 4), 0.75)
    >>> m.sum(axis=0).tolist()
    [2, 2, 2, 2]
  """
  n_out = shape[-1]
  k = layer_budget(shape, sparsity) // n_out
  u = jax.random.uniform(key, (n_out, fan_in(shape)))
  return _unrows(row_top_k(u, jnp.full((n_out,), k, jnp.int32)), shape)


def ablated(drop_scores: jax.Array, grow_scores: jax.Array,
            n_keep: jax.Array, n_prune: jax.Array, budget: int,
            min_salient: float) -> jax.Array:
  """The neurons to ablate (RCF:364-479), from neuron-row scores.

  Args:
    drop_scores: |w| rows ``(n_out, fan_in)`` (inactive positions 0).
    grow_scores: |grad| rows.
    n_keep, n_prune: this update's kept and dropped counts.
    budget: the layer's active-weight budget ``B``.
    min_salient: gamma_sal (0: no ablation).

  Returns:
    A bool ``(n_out,)`` vector.
  """
  n_out, fan = drop_scores.shape
  if not min_salient:
    return jnp.zeros((n_out,), jnp.bool_)
  salient = (selection.top_k_mask(drop_scores, n_keep) |
             selection.top_k_mask(grow_scores, n_prune))
  count = selection.row_counts(salient)
  thr = (int(min_salient) if min_salient >= 1 else
         max(1, int(min_salient * (budget // n_out))))
  thr = jnp.int32(thr)
  min_neurons = budget // fan
  if min_neurons < n_out:  # keep k' = B // n_active <= fan_in
    thr = jnp.minimum(thr, -jnp.sort(-count)[min_neurons])
  return count < thr


def update_layer(weight: jax.Array, grad: jax.Array, mask: jax.Array,
                 fraction: jax.Array, sparsity: float,
                 min_salient: float) -> jax.Array:
  """One SRigL mask update of one layer (any shape, neurons last)."""
  shape = mask.shape
  budget = layer_budget(shape, sparsity)
  w = _rows(jnp.abs(weight).astype(jnp.float32))
  g = _rows(jnp.abs(grad).astype(jnp.float32))
  m = _rows(mask)
  nnz = selection.count_true(mask)
  n_prune = mask_update.drop_count(fraction, nnz)
  n_keep = nnz - n_prune
  drop_scores = jnp.where(m, w, 0.0)
  dead = ablated(drop_scores, g, n_keep, n_prune, budget, min_salient)
  live = ~dead[:, None]
  k = budget // jnp.maximum(jnp.sum(~dead, dtype=jnp.int32), 1)
  n_out = m.shape[0]
  kept = selection.top_k_mask(drop_scores, n_keep, valid=m & live)
  kept = row_top_k(drop_scores, jnp.full((n_out,), k, jnp.int32),
                   valid=kept)
  deficit = jnp.where(dead, 0, k - selection.row_counts(kept))
  grown = row_top_k(g, deficit, valid=~kept & live)
  return _unrows(kept | grown, shape)


class SRigL(base.DropAndGrow):
  """RigL under a constant fan-in with neuron ablation (see the module).

  Args:
    min_salient: gamma_sal; 0 turns ablation off.
  """

  def __init__(self, min_salient: float = MIN_SALIENT_DEFAULT):
    super().__init__('srigl', lambda w, g, a, k: jnp.abs(g),
                     training_cost='dense_gradient_on_update')
    if not float(min_salient) >= 0.0:
      raise ValueError(f'srigl_min_salient must be >= 0; got {min_salient}')
    self.min_salient = float(min_salient)

  def validate(self, *, structure, custom_sparsity) -> None:
    if structure.sparsity is not None:
      raise ValueError("srigl keeps its own structure (a constant fan-in "
                       "per neuron); use structure='unstructured'")

  def initial_masks(self, keys: jax.Array, layer_shape: tuple[int, ...],
                    sparsity: float) -> jax.Array:
    return jax.vmap(lambda k: random_mask(k, layer_shape, sparsity))(keys)

  def update_masks(self, ctx: base.MaskContext):
    fraction = ctx.schedule.drop_fraction_at(ctx.step)
    new = []
    for w, g, m, s in zip(self.mask_weights(ctx), ctx.grads, ctx.masks,
                          ctx.sparsities):
      new.append(jax.vmap(
          lambda w, g, m, s=s: update_layer(w, g, m, fraction, s,
                                            self.min_salient))(w, g, m))
    return new, fraction


def srigl_method(srigl_min_salient: float = MIN_SALIENT_DEFAULT) -> base.Method:
  """SRigL (Lasby et al. 2024): constant fan-in RigL with neuron ablation.

  Args:
    srigl_min_salient: gamma_sal, the fraction of a neuron's constant
      fan-in that must be salient for it to stay (>= 1: an absolute count;
      0: no ablation). The authors' default 0.3; 0.95 for ViTs.

  Returns:
    The method.
  """
  return SRigL(srigl_min_salient)


def satisfies(mask: np.ndarray) -> bool:
  """True if every neuron of ``mask`` (host array, neurons last) has the
  same number of inputs, ablated (empty) neurons aside."""
  counts = np.asarray(mask).reshape(-1, np.shape(mask)[-1]).sum(0)
  live = counts[counts > 0]
  return live.size == 0 or bool(np.all(live == live[0]))
