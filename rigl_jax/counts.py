"""Exact counts past 2**31 without 64-bit JAX.

JAX computes in 32 bits unless ``jax_enable_x64`` is set, and most users
leave it off; an int32 count of the weights of a model stops being exact at
2**31 (2.1 billion weights, a mid-sized language model). Global selection
(global pruning, IMP's global rounds) counts over all layers at once, so it
keeps its counts in a `Count`: two int32 limbs, ``hi * 2**30 + lo`` with
``0 <= lo < 2**30``, exact to 2**61. Every leaf on its own still has fewer
than 2**31 entries (an int32 count per leaf is exact); only sums over
leaves, the global k and positions across leaves need the wide form.

Example:

>>> import jax.numpy as jnp
>>> from rigl_jax import counts
>>> n = counts.add(counts.of(2**31 - 1), counts.of(jnp.int32(2**31 - 1)))
>>> counts.value(n)
4294967294
>>> bool(counts.ge(n, counts.of(2**32)))
False
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

_BITS = 30
_BASE = 1 << _BITS
_MASK = _BASE - 1


class Count(NamedTuple):
  """The exact integer ``hi * 2**30 + lo`` (int32 limbs, ``0 <= lo < 2**30``)."""
  hi: jax.Array
  lo: jax.Array


def of(x) -> Count:
  """A `Count` of a Python int (any size) or an int32 array.

  Args:
    x: a Python int (|x| < 2**61) or an int32 array (scalar or any shape).

  Returns:
    The same integer(s) as a `Count`.
  """
  if isinstance(x, (int, np.integer)):
    x = int(x)
    if abs(x) >= 1 << (31 + _BITS):
      raise ValueError(f'count {x} is out of range (|count| < 2**61)')
    return Count(jnp.int32(x >> _BITS), jnp.int32(x & _MASK))
  x = jnp.asarray(x)
  if x.dtype != jnp.int32:
    raise TypeError(f'counts.of takes a Python int or int32, got {x.dtype}')
  return Count(x >> _BITS, x & _MASK)


def add(a: Count, b: Count) -> Count:
  """``a + b``, exact."""
  lo = a.lo + b.lo  # < 2**31: no overflow
  return Count(a.hi + b.hi + (lo >> _BITS), lo & _MASK)


def neg(a: Count) -> Count:
  """``-a``, exact."""
  borrow = (a.lo > 0).astype(jnp.int32)
  return Count(-a.hi - borrow, (_BASE - a.lo) & _MASK)


def sub(a: Count, b: Count) -> Count:
  """``a - b``, exact."""
  return add(a, neg(b))


def ge(a: Count, b: Count) -> jax.Array:
  """``a >= b`` (bool)."""
  return (a.hi > b.hi) | ((a.hi == b.hi) & (a.lo >= b.lo))


def gt(a: Count, b: Count) -> jax.Array:
  """``a > b`` (bool)."""
  return (a.hi > b.hi) | ((a.hi == b.hi) & (a.lo > b.lo))


def where(cond: jax.Array, a: Count, b: Count) -> Count:
  """Elementwise ``a if cond else b``."""
  return Count(jnp.where(cond, a.hi, b.hi), jnp.where(cond, a.lo, b.lo))


def to_float(a: Count) -> jax.Array:
  """float32 approximation of ``a`` (the sign is exact)."""
  return a.hi.astype(jnp.float32) * float(_BASE) + a.lo.astype(jnp.float32)


def clip_to(a: Count, upper: jax.Array) -> jax.Array:
  """``min(max(a, 0), upper)`` as int32, for ``0 <= upper < 2**31``."""
  below = a.hi < 0
  above = ge(a, of(jnp.asarray(upper, jnp.int32)))
  # Otherwise 0 <= a < upper < 2**31, so hi is 0 or 1: no overflow.
  inside = a.hi * _BASE + a.lo
  return jnp.where(below, 0, jnp.where(above, upper, inside)).astype(jnp.int32)


def total(xs) -> Count:
  """Exact sum of int32 scalars (each below 2**31)."""
  out = of(0)
  for x in xs:
    out = add(out, of(jnp.asarray(x, jnp.int32)))
  return out


def value(a: Count) -> int:
  """The Python int of a concrete scalar `Count` (for tests and logs)."""
  return int(a.hi) * _BASE + int(a.lo)


def floor_fraction(fraction: jax.Array, n: int) -> Count:
  """``floor(fraction * n)`` for a float32 fraction in [0, 1] and a static n.

  Exact where float32 can hold the product (n < 2**24); past that it is
  the float32 product, whose error (n * 2**-24 at most) is already that of
  the float32 fraction itself.
  """
  x = jnp.floor(jnp.asarray(fraction, jnp.float32) * jnp.float32(n))
  hi = jnp.floor(x / _BASE)
  lo = x - hi * _BASE  # exact: both terms are float32 multiples of x's ulp
  return Count(hi.astype(jnp.int32), lo.astype(jnp.int32))
