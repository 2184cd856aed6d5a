"""Exact top-k selection as boolean masks, fast on CPU, GPU and TPU.

Mask updates need "the k largest scores of a layer" with k a traced value
(it depends on the step through the drop-fraction schedule). Sorting a whole
layer costs O(N log N) and is slow under XLA on CPU; `jax.lax.top_k` needs a
static k. Instead we search for a threshold on the bits of the float
scores: for non-negative float32 values the int32 bit pattern is monotonic in
the value, so "how many keys are >= t" is a decreasing step function of the
integer t, and a threshold with exactly k keys above it selects the top k.
The search keeps a bracket [lo, hi) with count(>= lo) >= k > count(>= hi)
and probes where linear interpolation of the two counts puts k (regula falsi,
Illinois variant), bisecting when that stalls: 10-25 counting passes on the
score distributions of sparse training, where plain bisection needs ~30, and
never more than 41. Ties at the threshold are broken by position (lower index
first), by a bisection on the index that only runs when ties actually
straddle the threshold. Every pass is a fused compare-and-sum, so the cost is
a dozen or two streaming reads of the scores with no sort and no host sync.
`top_k_rows` (the mask updates' per-layer selections) first probes where a
strided sample of each large row puts its k-th largest key, just above and
just below it, so that its search starts from a narrow bracket.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
import functools
from typing import Any, NamedTuple, Optional

import jax
import jax.numpy as jnp
from jax import lax
import numpy as np

from rigl_jax import counts

_EXCLUDED = -1  # key of positions that may not be selected


def _keys(scores: jax.Array, valid: Optional[jax.Array]) -> jax.Array:
  """Order-preserving int32 keys of non-negative scores; -1 where invalid.

  Float scores are ranked by value; int32 scores (e.g. random 31-bit draws)
  are their own keys, negative ones counting as 0.
  """
  if scores.dtype == jnp.int32:
    k = jnp.maximum(scores, 0)
  else:
    s = scores.astype(jnp.float32)
    # NaN and negative scores never win; +inf is allowed (largest key).
    s = jnp.where(jnp.isnan(s), 0.0, jnp.maximum(s, 0.0))
    k = lax.bitcast_convert_type(s, jnp.int32)
  if valid is not None:
    k = jnp.where(valid, k, _EXCLUDED)
  return k.reshape(-1)


# Group size of `row_counts`' first stage: its int8 partial sums cannot
# overflow.
_GROUP = 32


def row_counts(x: jax.Array) -> jax.Array:
  """Number of True entries in each row of a bool array ``(rows, n)``.

  Counted in two stages, int8 sums over groups of 32 and then int32 sums of
  those, because XLA:CPU materialises a whole-size int32 copy of a bool
  array before a direct int32 sum (a scratch buffer as large as the layer,
  per count); this way the scratch is 1/32 of a byte per entry and each
  counting pass is ~3x faster. Exact, like the direct sum.

  Args:
    x: bool array ``(rows, n)``.

  Returns:
    int32 ``(rows,)``.

  Example:
    >>> import jax.numpy as jnp
    >>> from rigl_jax import selection
    >>> selection.row_counts(jnp.arange(80).reshape(2, 40) % 3 == 0).tolist()
    [14, 13]
  """
  rows, n = x.shape
  main = n - n % _GROUP
  total = jnp.zeros([rows], jnp.int32)
  if main:
    part = jnp.sum(x[:, :main].reshape(rows, -1, _GROUP), axis=2,
                   dtype=jnp.int8)
    total = jnp.sum(part, axis=1, dtype=jnp.int32)
  if main < n:
    total = total + jnp.sum(x[:, main:], axis=1, dtype=jnp.int32)
  return total


def count_true(x: jax.Array) -> jax.Array:
  """Number of True entries of a bool array (int32 scalar); see
  `row_counts`."""
  return row_counts(x.reshape(1, -1))[0]


def _count(keys: Sequence[jax.Array], pred) -> counts.Count:
  """Exact number of entries over all ``keys`` where ``pred`` holds."""
  return counts.total(count_true(pred(key)) for key in keys)


# Secant steps tried before the search settles for bisection. Ties and
# irregular score distributions make secant steps crawl; with this cap the
# search never needs more than _SECANT_STEPS + 31 counting passes.
_SECANT_STEPS = 10


class _Carry(NamedTuple):
  """State of the threshold search (scalars, or one entry per segment)."""
  lo: jax.Array        # count(>= lo) >= k
  hi: jax.Array        # count(>= hi) < k
  f_lo: jax.Array      # (weighted) count(>= lo) - k > 0, float32
  f_hi: jax.Array      # (weighted) count(>= hi) - k < 0, float32
  kept_hi: jax.Array   # the last step moved lo (so hi stayed put)
  kept_lo: jax.Array   # the last step moved hi
  width: jax.Array     # bracket width when it last halved
  stalls: jax.Array    # steps since then
  steps: jax.Array
  c_lo: Any            # count(>= lo), exact (int32 per segment, or a
  c_hi: Any            # count(>= hi)   `counts.Count` in the global search)


def _probe(c: _Carry) -> jax.Array:
  """Where the search counts next: the secant's key, or the bracket's
  middle after two steps that failed to halve it (or `_SECANT_STEPS`
  steps); strictly inside the bracket while it is searching."""
  secant = c.lo + ((c.hi - c.lo).astype(jnp.float32) *
                   (c.f_lo / (c.f_lo - c.f_hi))).astype(jnp.int32)
  bisect = (c.stalls >= 2) | (c.steps >= _SECANT_STEPS)
  return jnp.clip(jnp.where(bisect, c.lo + (c.hi - c.lo) // 2, secant),
                  c.lo + 1, jnp.maximum(c.hi - 1, c.lo + 1))


def _advance(c: _Carry, mid: jax.Array, n: Any, f: jax.Array,
             ok: jax.Array, where_count: Callable) -> _Carry:
  """The bracket after counting ``n`` keys >= ``mid`` (``f``: n - k as
  float32; ``ok``: n >= k): the Illinois rule, the end that stays put twice
  has its weight halved."""
  lo, hi = jnp.where(ok, mid, c.lo), jnp.where(ok, c.hi, mid)
  halved = hi - lo <= c.width // 2
  return _Carry(
      lo=lo, hi=hi,
      f_lo=jnp.where(ok, f, jnp.where(c.kept_lo, 0.5 * c.f_lo, c.f_lo)),
      f_hi=jnp.where(ok, jnp.where(c.kept_hi, 0.5 * c.f_hi, c.f_hi), f),
      kept_hi=ok, kept_lo=~ok,
      width=jnp.where(halved, hi - lo, c.width),
      stalls=jnp.where(halved, 0, c.stalls + 1),
      steps=c.steps + 1,
      c_lo=where_count(ok, n, c.c_lo), c_hi=where_count(ok, c.c_hi, n))


def _threshold(count: Callable[[jax.Array], counts.Count], hi0: jax.Array,
               k: counts.Count) -> _Carry:
  """A key t with count(key >= t) >= k, and == k unless ties straddle it.

  Searches the bracket [lo, hi), count(>= lo) >= k > count(>= hi), by
  regula falsi with the Illinois modification (the end that stays put twice
  has its weight halved), bisecting instead after two steps that failed to
  halve the bracket, and only bisecting after `_SECANT_STEPS` steps. Returns
  the final bracket: t = ``lo`` (0 when fewer than k keys are valid: select
  them all), with the exact counts ``c_lo`` at ``lo`` and, when ``c_lo > k``
  (ties straddle t), ``c_hi`` at ``hi = lo + 1``.

  Args:
    count: t -> the exact number of keys >= t, over every array (wide: the
      arrays together may hold more than 2**31 entries).
    hi0: an int32 key above every valid key.
    k: how many keys to select.
  """
  lo0 = jnp.zeros([], jnp.int32)
  positive = counts.gt(k, counts.of(0))

  def excess(n):  # n - k, exact, then float32 (for the secant)
    return counts.to_float(counts.sub(n, k))

  def searching(c):
    return (c.hi - c.lo > 1) & (c.f_lo > 0) & positive

  def step(c):
    mid = _probe(c)
    n = count(mid)
    return _advance(c, mid, n, excess(n), counts.ge(n, k), counts.where)

  zero = jnp.zeros([], jnp.int32)
  n0 = count(lo0)
  init = _Carry(lo=lo0, hi=hi0, f_lo=excess(n0),
               f_hi=-counts.to_float(k), kept_hi=jnp.zeros([], bool),
               kept_lo=jnp.zeros([], bool), width=hi0 - lo0, stalls=zero,
               steps=zero, c_lo=n0, c_hi=counts.of(zero))
  return lax.while_loop(searching, step, init)


def _threshold_each(count_ge: Callable[[jax.Array, jax.Array], jax.Array],
                    hi0: jax.Array, k: jax.Array,
                    guide: Optional[jax.Array] = None) -> _Carry:
  """`_threshold` for many selections at once, one bracket per entry of k.

  Every bracket advances in the same loop, by the same rule as
  `_threshold`'s; a finished one stays as it is. Counts are int32 (each
  selection has fewer than 2**31 entries).

  Args:
    count_ge: ``(t, active) -> n``: per selection, the number of keys
      ``>= t[i]``; entries where ``active`` is False are not read (a caller
      may skip their counting pass).
    hi0: int32 ``(S,)``, a key above every valid key of each selection.
    k: int32 ``(S,)``, how many to select in each.
    guide: optional int32 ``(G, S)``: the keys probed in the first G steps
      (clipped into the bracket; -1: that selection's own rule instead).
      Any probe inside the bracket keeps it valid, so a guide changes how
      many passes the search takes, never what it finds.

  Returns:
    The final brackets, as `_threshold`'s.
  """
  def searching(c):
    return (c.hi - c.lo > 1) & (c.f_lo > 0) & (k > 0)

  def step(c):
    active = searching(c)
    mid = _probe(c)
    if guide is not None:
      g = jnp.take_along_axis(
          guide, jnp.minimum(c.steps, guide.shape[0] - 1)[None], 0)[0]
      mid = jnp.where((c.steps < guide.shape[0]) & (g >= 0),
                      jnp.clip(g, c.lo + 1, jnp.maximum(c.hi - 1, c.lo + 1)),
                      mid)
    n = count_ge(mid, active)
    f = (n - k).astype(jnp.float32)
    new = _advance(c, mid, n, f, f >= 0, jnp.where)
    return jax.tree.map(lambda a, b: jnp.where(active, a, b), new, c)

  zeros = jnp.zeros(k.shape, jnp.int32)
  falses = jnp.zeros(k.shape, bool)
  n0 = count_ge(zeros, jnp.ones(k.shape, bool))
  init = _Carry(lo=zeros, hi=hi0, f_lo=(n0 - k).astype(jnp.float32),
                f_hi=(-k).astype(jnp.float32), kept_hi=falses,
                kept_lo=falses, width=hi0, stalls=zeros, steps=zeros,
                c_lo=n0, c_hi=zeros)
  return lax.while_loop(lambda c: jnp.any(searching(c)), step, init)


def _first_ties_each(count_tie: Callable[[jax.Array, jax.Array], jax.Array],
                     found: _Carry, k: jax.Array, size: jax.Array
                     ) -> jax.Array:
  """Per selection, where its ties at the threshold stop being taken.

  Ties straddle the threshold t = ``found.lo`` only where ``c_lo > k``;
  there the first ``k - c_hi`` of them by position are taken, and this
  returns the smallest J with that many ties before it (a bisection on the
  position, all selections in one loop); elsewhere ``size`` (every key
  ``>= t`` is taken).

  Args:
    count_tie: ``(J, busy) -> n``: per selection, the number of keys
      ``== t`` at positions ``< J[i]``; entries where ``busy`` is False
      are not read.
    found: `_threshold_each`'s result.
    k: int32 ``(S,)``.
    size: int32 ``(S,)``, the positions of each selection.
  """
  ties = (found.c_lo > k) & (k > 0)
  need = k - found.c_hi

  def index_step(carry):
    lo, hi = carry
    busy = lo < hi
    mid = lo + (hi - lo) // 2
    ok = count_tie(mid, busy) >= need
    return (jnp.where(busy & ~ok, mid + 1, lo),
            jnp.where(busy & ok, mid, hi))

  start = jnp.where(ties, 0, size).astype(jnp.int32)
  return lax.cond(
      jnp.any(ties),
      lambda: lax.while_loop(lambda c: jnp.any(c[0] < c[1]), index_step,
                             (start, size))[0],
      lambda: size)


def _tie_takes(tie_counts: Sequence[jax.Array], need: counts.Count
               ) -> list[jax.Array]:
  """How many of each array's ties to take: the first ``need`` overall.

  Ties go to earlier arrays first, so array i takes
  ``clip(need - sum(tie_counts[:i]), 0, tie_counts[i])``; at most one
  array takes some but not all of its ties.

  Args:
    tie_counts: int32 scalars, the ties in each array (each below 2**31).
    need: how many ties to take in all (may pass 2**31).

  Returns:
    One int32 scalar per array.
  """
  takes, before = [], counts.of(0)
  for c in tie_counts:
    takes.append(counts.clip_to(counts.sub(need, before), c))
    before = counts.add(before, counts.of(c))
  return takes


def _first_ties(key: jax.Array, t: jax.Array, take: jax.Array,
                tie_count: jax.Array) -> jax.Array:
  """The smallest position j with ``take`` entries ``== t`` before it.

  0 when ``take <= 0`` and ``key.size`` when ``take >= tie_count``, with no
  counting pass; otherwise a bisection on the position.
  """
  pos = lax.iota(jnp.int32, key.size)

  def step(carry):
    lo, hi = carry
    mid = lo + (hi - lo) // 2
    ok = count_true((key == t) & (pos < mid)) >= take
    return jnp.where(ok, lo, mid + 1), jnp.where(ok, mid, hi)

  size = jnp.int32(key.size)
  lo = jnp.where(take >= tie_count, size, 0).astype(jnp.int32)
  hi = jnp.where(take <= 0, 0, size).astype(jnp.int32)
  j, _ = lax.while_loop(lambda c: c[0] < c[1], step, (lo, hi))
  return j


def top_k_masks(scores: Sequence[jax.Array],
                k: jax.Array | int,
                valid: Optional[Sequence[Optional[jax.Array]]] = None
                ) -> list[jax.Array]:
  """Selects the ``k`` largest scores jointly over several arrays.

  Scores are treated as non-negative (negative values and NaN count as 0).
  Among equal scores, earlier arrays and lower flat indices win, so the result
  is deterministic. The arrays together may hold more than 2**31 entries
  (each one fewer): counts over them are exact without 64-bit JAX
  (`rigl_jax.counts`).

  Args:
    scores: float arrays of any shapes.
    k: how many positions to select in total (may be traced): a Python int
      (any size), an int32 array, or a `rigl_jax.counts.Count`. Values above
      the number of valid positions select every valid position.
    valid: optional bool arrays shaped like ``scores``; only positions where
      ``valid`` is True can be selected.

  Returns:
    Bool arrays shaped like ``scores`` with exactly ``min(k, #valid)`` True
    entries in total.

  Example:

  >>> import jax.numpy as jnp
  >>> from rigl_jax import selection
  >>> a, b = jnp.array([0.5, 0.1]), jnp.array([[0.5, 0.9]])
  >>> [m.tolist() for m in selection.top_k_masks([a, b], 2)]
  [[True, False], [[False, True]]]
  """
  if valid is None:
    valid = [None] * len(scores)
  for s in scores:
    if s.size >= 2**31:
      raise ValueError(f'top_k_masks takes arrays of fewer than 2**31 '
                       f'entries each, got one of shape {s.shape}; split it '
                       f'(the arrays together may be larger)')
  keys = [_keys(s, v) for s, v in zip(scores, valid)]
  if not isinstance(k, counts.Count):
    k = counts.of(k if isinstance(k, (int, np.integer))
                  else jnp.asarray(k, jnp.int32))
  # Keys are >= 0 where valid; the largest key is < 2**31 - 1 (NaN excluded).
  hi0 = jnp.maximum(
      jnp.max(jnp.stack([jnp.max(key, initial=_EXCLUDED) for key in keys])),
      0) + 1
  found = _threshold(lambda t: _count(keys, lambda key: key >= t), hi0, k)
  t = found.lo
  # Ties straddle t only if count(>= t) > k; then hi == t + 1, so the
  # search's exact count at hi is count(> t), with no extra pass. Without
  # ties every key >= t is selected.
  ties = counts.gt(found.c_lo, k) & counts.gt(k, counts.of(0))

  def split_ties():
    tie_counts = [count_true(key == t) for key in keys]
    takes = _tie_takes(tie_counts, counts.sub(k, found.c_hi))
    # Positions are per array (int32); at most one array takes part of its
    # ties, and only its search runs.
    return [_first_ties(key, t, take, c)
            for key, take, c in zip(keys, takes, tie_counts)]

  ends = lax.cond(ties, split_ties,
                  lambda: [jnp.int32(key.size) for key in keys])
  out = []
  for s, key, end in zip(scores, keys, ends):
    pos = lax.iota(jnp.int32, key.size)
    sel = (key > t) | ((key == t) & (pos < end))
    sel = sel & (key != _EXCLUDED) & counts.gt(k, counts.of(0))
    out.append(sel.reshape(s.shape))
  return out


def top_k_mask(scores: jax.Array, k: jax.Array | int,
               valid: Optional[jax.Array] = None) -> jax.Array:
  """Single-array `top_k_masks`: the ``k`` largest entries of ``scores``."""
  return top_k_masks([scores], k, None if valid is None else [valid])[0]


def segment_top_k(scores: jax.Array, row_segment: Sequence[int],
                  k: jax.Array, valid: Optional[jax.Array] = None
                  ) -> jax.Array:
  """The ``k[s]`` largest scores of every segment of rows, all in one search.

  Many layers' selections in one threshold search (one compiled loop rather
  than one per layer, which matters for compile time on many-layer models):
  the layers are laid out as rows of a 2-D array, each layer taking
  consecutive rows (its last row padded with invalid positions), and every
  segment of rows gets its own bracket, advanced together. Within a segment
  ties are broken by position (row-major), as in `top_k_mask`, so a segment
  selects exactly what `top_k_mask` selects on its flattened scores.

  Args:
    scores: float or int32 array ``(rows, cols)``; negative and NaN count
      as 0.
    row_segment: a static sequence of ``rows`` non-decreasing segment ids
      ``0 .. S - 1``; a segment's rows are consecutive.
    k: int array ``(S,)``: how many to select in each segment (may be traced;
      values above a segment's valid positions select all of them).
    valid: optional bool array like ``scores``; only valid positions can be
      selected (mark padding invalid).

  Returns:
    A bool array like ``scores`` with exactly ``min(k[s], #valid in s)`` True
    entries in every segment ``s``.

  Example:
    >>> import jax.numpy as jnp
    >>> from rigl_jax import selection
    >>> s = jnp.array([[1., 5., 2.], [4., 3., 0.], [9., 8., 7.]])
    >>> selection.segment_top_k(s, [0, 0, 1], jnp.array([2, 1])).astype(int)
    Array([[0, 1, 0],
           [1, 0, 0],
           [1, 0, 0]], dtype=int32)
  """
  seg_np = np.asarray(row_segment, np.int32)
  n_seg = int(seg_np.max()) + 1 if seg_np.size else 0
  rows, cols = scores.shape
  first_row = np.zeros(n_seg, np.int64)
  for s in range(n_seg - 1, -1, -1):
    first_row[s] = np.flatnonzero(seg_np == s)[0]
  seg = jnp.asarray(seg_np)
  # Position of each entry within its segment, row-major.
  row_base = jnp.asarray((np.arange(rows) - first_row[seg_np]) * cols,
                         jnp.int32)
  pos = row_base[:, None] + lax.iota(jnp.int32, cols)[None, :]
  seg_size = jnp.asarray(np.bincount(seg_np, minlength=n_seg) * cols,
                         jnp.int32)
  keys = _keys(scores, valid).reshape(rows, cols)
  k = jnp.asarray(k, jnp.int32)

  def seg_sum(per_row):
    return jax.ops.segment_sum(per_row, seg, n_seg, indices_are_sorted=True)

  def count(pred_rows):
    return seg_sum(row_counts(pred_rows))

  def count_ge(t):
    return count(keys >= t[seg][:, None])

  row_max = jnp.max(keys, axis=1)
  hi0 = jnp.maximum(jax.ops.segment_max(row_max, seg, n_seg,
                                        indices_are_sorted=True), 0) + 1

  found = _threshold_each(lambda t, active: count_ge(t), hi0, k)
  t_rows = found.lo[seg][:, None]
  j = _first_ties_each(
      lambda mid, busy: count((keys == t_rows) & (pos < mid[seg][:, None])),
      found, k, seg_size)
  sel = (keys > t_rows) | ((keys == t_rows) & (pos < j[seg][:, None]))
  return sel & (keys != _EXCLUDED) & (k[seg] > 0)[:, None]


# `_sample_guide`: about this many sampled keys per array, at least
# `_MIN_STRIDE` keys apart and at least `_MIN_ROW_SAMPLE` per row; smaller
# arrays search without a guide (their passes are cheap).
_SAMPLE = 8192
_MIN_STRIDE = 8
_MIN_ROW_SAMPLE = 256


def _sample_guide(keys: Sequence[jax.Array], k: jax.Array) -> jax.Array:
  """The first two probes of each row's threshold search, from a sample.

  Sorts every ``stride``-th key of each row of the large arrays (one sort
  for all of them) and reads off the keys just above and just below the
  rank where the row's k-th largest key should fall (three binomial
  standard deviations either side): the exact counts at those two keys
  then bracket ``k`` closely, and the search needs a few secant steps
  instead of a dozen or two.

  Args:
    keys: int32 ``(rows_i, n_i)`` keys (`_keys`) of each array.
    k: int32 ``(sum rows_i,)``, the arrays' rows in order.

  Returns:
    int32 ``(2, sum rows_i)``: a key above the estimate, then one below it;
    -1 (no guide) in the rows of arrays too small for a sample to pay.
  """
  plan, width = [], 0  # per array: (rows, n, stride, m); m = 0: no guide
  for key in keys:
    rows, n = key.shape
    stride = -(-rows * n // _SAMPLE)
    m = -(-n // max(stride, 1))
    if stride < _MIN_STRIDE or m < _MIN_ROW_SAMPLE:
      m = 0
    plan.append((rows, n, stride, m))
    width = max(width, m)
  if not width:
    return jnp.full((2, k.shape[0]), -1, jnp.int32)
  # One sort of the guided rows' samples, padded with _EXCLUDED (sorted
  # first, so ranks from the top are unchanged).
  guided = [(key, r, n, stride, m) for key, (r, n, stride, m) in
            zip(keys, plan) if m]
  ascending = jnp.sort(jnp.concatenate([
      jnp.pad(key[:, ::stride], ((0, 0), (0, width - m)),
              constant_values=_EXCLUDED)
      for key, _, _, stride, m in guided]), axis=1)
  m = jnp.asarray(np.concatenate([np.full(r, m_) for _, r, _, _, m_ in
                                  guided]), jnp.float32)
  n = jnp.asarray(np.concatenate([np.full(r, n_) for _, r, n_, _, _ in
                                  guided]), jnp.float32)
  starts = np.cumsum([0] + [r for r, _, _, _ in plan])
  k_guided = jnp.concatenate([k[a:a + r] for a, (r, _, _, m_) in
                              zip(starts, plan) if m_])
  rank = k_guided.astype(jnp.float32) * (m / n)  # from the top, in the sample
  margin = 3.0 * jnp.sqrt(rank) + 2.0

  def at_rank(r):  # the sample's key of rank r from the top
    r = jnp.clip(r, 0, m - 1).astype(jnp.int32)
    return jnp.take_along_axis(ascending, (width - 1 - r)[:, None], 1)[:, 0]

  above = at_rank(jnp.floor(rank - margin)) + 1
  below = at_rank(jnp.ceil(rank + margin))
  probes = jnp.stack([jnp.where(above > 0, above, -1),
                      jnp.where(below > 0, below, -1)])
  out, done = [], 0
  for rows, _, _, m_ in plan:
    if m_:
      out.append(probes[:, done:done + rows])
      done += rows
    else:
      out.append(jnp.full((2, rows), -1, jnp.int32))
  return jnp.concatenate(out, axis=1)


def top_k_rows(scores: Sequence[jax.Array], k: Sequence[jax.Array],
               valid: Optional[Sequence[Optional[jax.Array]]] = None
               ) -> list[jax.Array]:
  """Per layer top-k of many layers, all in one threshold search.

  Selects what ``jax.vmap(top_k_mask)(scores[i], k[i], valid[i])`` selects
  for every ``i`` (each row of ``scores[i]``, flattened, is one selection;
  ties by position), in one compiled loop instead of one per array: the
  program of a many-layer model's mask update compiles several times
  faster. Each array's counting pass runs only while one of its rows is
  still searching, so the passes are those of the separate searches.

  Args:
    scores: float or int32 arrays ``(L_i, ...)``; negative and NaN count
      as 0.
    k: int arrays ``(L_i,)``: how many to select in each row (traced;
      values above a row's valid positions select all of them).
    valid: optional bool arrays shaped like ``scores``.

  Returns:
    Bool arrays shaped like ``scores``, with exactly ``min(k[i][r], #valid)``
    True entries in row ``r`` of array ``i``.

  Example:
    >>> import jax.numpy as jnp
    >>> from rigl_jax import selection
    >>> a = jnp.array([[3., 1., 2.], [0., 5., 5.]])
    >>> b = jnp.array([[[1., 1.], [4., 1.]]])
    >>> out = selection.top_k_rows([a, b], [jnp.array([2, 1]), jnp.array([2])])
    >>> [o.astype(int).tolist() for o in out]
    [[[1, 0, 1], [0, 1, 0]], [[[1, 0], [1, 0]]]]
  """
  if valid is None:
    valid = [None] * len(scores)
  keys, spans, start = [], [], 0
  for s, v in zip(scores, valid):
    rows = s.shape[0]
    if s.size // max(rows, 1) >= 2**31:
      raise ValueError(f'top_k_rows takes rows of fewer than 2**31 entries, '
                       f'got an array of shape {s.shape}')
    keys.append(_keys(s, v).reshape(rows, -1))
    spans.append((start, start + rows))
    start += rows
  if not keys:
    return []
  k_all = jnp.concatenate([jnp.asarray(x, jnp.int32).reshape(-1) for x in k])
  size = jnp.concatenate([jnp.full([b - a], key.shape[1], jnp.int32)
                          for key, (a, b) in zip(keys, spans)])

  pos = [lax.iota(jnp.int32, key.shape[1])[None, :] for key in keys]

  def count(pred, active):
    """Per row, the entries where ``pred(i, rows)`` holds (array ``i``, its
    rows' slice of the per-row vectors); an array none of whose rows is
    active is skipped (its rows read 0)."""
    return jnp.concatenate([
        lax.cond(jnp.any(active[a:b]),
                 functools.partial(lambda i, r: row_counts(pred(i, r)), i,
                                   slice(a, b)),
                 functools.partial(jnp.zeros, [b - a], jnp.int32))
        for i, (a, b) in enumerate(spans)])

  hi0 = jnp.maximum(jnp.concatenate(
      [jnp.max(key, axis=1, initial=_EXCLUDED) for key in keys]), 0) + 1
  guide = _sample_guide(keys, k_all)
  found = _threshold_each(
      lambda t, active: count(lambda i, r: keys[i] >= t[r, None], active),
      hi0, k_all, guide)
  t = found.lo
  ends = _first_ties_each(
      lambda mid, busy: count(lambda i, r: (keys[i] == t[r, None]) & (
          pos[i] < mid[r, None]), busy),
      found, k_all, size)
  out = []
  for s, key, p, (a, b) in zip(scores, keys, pos, spans):
    ta, ea = t[a:b, None], ends[a:b, None]
    sel = (key > ta) | ((key == ta) & (p < ea))
    sel = sel & (key != _EXCLUDED) & (k_all[a:b] > 0)[:, None]
    out.append(sel.reshape(s.shape))
  return out
