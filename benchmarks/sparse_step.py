"""Benchmark: sparse train-step cost relative to dense, and mask-update time.

Prints, for one model in one run:
  * the time of a dense train step (inner optimizer only);
  * for each method, the time of an ordinary sparse step, of a step with a
    mask update, and the amortised cost over ``--update_freq`` steps,
    relative to dense;
  * the memory XLA plans for each step (arguments + outputs + scratch) and
    the process's peak host memory;
  * the time of one RigL mask update on a ResNet-50-sized parameter tree
    (25.5M weights in 54 kernels, ERK 90%).

Usage:
  python benchmarks/sparse_step.py [--width 1024] [--batch 256] [--update_freq 100]
      [--no_tune_allocator]
"""

from __future__ import annotations

import argparse
import resource
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

import rigl_jax
from rigl_jax import cpu_allocator


def _time(fn, *args, repeats: int) -> float:
  out = fn(*args)
  jax.block_until_ready(out)
  best = float('inf')
  for _ in range(3):
    t0 = time.perf_counter()
    for _ in range(repeats):
      out = fn(*args)
    jax.block_until_ready(out)
    best = min(best, (time.perf_counter() - t0) / repeats)
  return best


def mlp(width: int, depth: int = 3, d_in: int = 784, classes: int = 10):
  sizes = [d_in] + [width] * depth + [classes]
  keys = jax.random.split(jax.random.PRNGKey(0), len(sizes))
  params = {f'Dense_{i}': {'kernel': jax.random.normal(keys[i], (a, b)) /
                           np.sqrt(a), 'bias': jnp.zeros(b)}
            for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:]))}

  def loss(p, x, y):
    for i in range(len(sizes) - 1):
      x = x @ p[f'Dense_{i}']['kernel'] + p[f'Dense_{i}']['bias']
      if i < len(sizes) - 2:
        x = jax.nn.relu(x)
    return optax.softmax_cross_entropy_with_integer_labels(x, y).mean()

  return params, loss


def step_times(args) -> None:
  params, loss = mlp(args.width)
  x = jax.random.normal(jax.random.PRNGKey(1), (args.batch, 784))
  y = jnp.arange(args.batch) % 10
  inner = optax.sgd(0.01, momentum=0.9, nesterov=True)
  n_params = sum(p.size for p in jax.tree.leaves(params))
  print(f'model: MLP 784-{args.width}x3-10 ({n_params / 1e6:.2f}M params), '
        f'batch {args.batch}, sgd+nesterov, {jax.devices()[0].platform}')

  def make_step(tx, mask_update=None):
    def step(p, s):
      g = jax.grad(loss)(p, x, y)
      if mask_update is None:
        u, s = tx.update(g, s, p)
      else:
        u, s = tx.update(g, s, p, mask_update=mask_update)
      return optax.apply_updates(p, u), s
    return jax.jit(step, donate_argnums=(0, 1))

  # Each step donates its inputs, so give every timing fresh copies.
  dense_step = make_step(inner)
  dense_mem = step_memory_mb(dense_step, params, inner.init(params))
  dense = _time_fresh(dense_step, params, inner.init(params), args)
  print(f'{"dense step":<28}{dense * 1e3:9.2f} ms   1.000x   '
        f'step memory {dense_mem:.1f} MiB')
  print('Two programs (the loop passes mask_update=True/False, as train.py '
        'does); the last column is the single program with lax.cond.')
  print(f'{"method":<10}{"sparse step":>14}{"update step":>14}'
        f'{"amortised/" + str(args.update_freq):>16}{"vs dense":>10}'
        f'{"cond step":>14}{"memory (plain/update)":>24}')
  for method in ['static', 'set', 'snfs', 'rigl', 'pruning']:
    common = dict(sparsity=0.9, distribution='erk')
    if method == 'static':
      tx = rigl_jax.static(inner, **common)
      t_plain = _time_fresh(make_step(tx), *rigl_jax.masked_init(tx, params),
                            args)
      t_upd = t_cond = t_plain
      mem = step_memory_mb(make_step(tx), *rigl_jax.masked_init(tx, params))
      mems = (mem, mem)
    else:
      tx = rigl_jax.sparsify(inner, method, update_freq=1, end_step=10**8,
                             drop_fraction_schedule='constant', **common)
      t_plain = _time_fresh(make_step(tx, False),
                            *rigl_jax.masked_init(tx, params), args)
      t_upd = _time_fresh(make_step(tx, True),
                          *rigl_jax.masked_init(tx, params), args)
      tx_cond = rigl_jax.sparsify(inner, method, begin_step=10**8,
                                  end_step=10**8 + 1, **common)
      t_cond = _time_fresh(make_step(tx_cond),
                           *rigl_jax.masked_init(tx_cond, params), args)
      mems = tuple(step_memory_mb(make_step(tx, flag),
                                  *rigl_jax.masked_init(tx, params))
                   for flag in (False, True))
    amort = ((args.update_freq - 1) * t_plain + t_upd) / args.update_freq
    print(f'{method:<10}{t_plain * 1e3:11.2f} ms{t_upd * 1e3:11.2f} ms'
          f'{amort * 1e3:13.2f} ms{amort / dense:9.3f}x'
          f'{t_cond * 1e3:11.2f} ms{mems[0]:11.1f} /{mems[1]:6.1f} MiB')


def step_memory_mb(step, p, s) -> float:
  """Peak memory XLA plans for one step: arguments + outputs (less the
  donated, aliased ones) + scratch, from the compiled buffer assignment."""
  m = step.lower(p, s).compile().memory_analysis()
  if m is None:
    return float('nan')
  total = (m.argument_size_in_bytes + m.output_size_in_bytes
           - m.alias_size_in_bytes + m.temp_size_in_bytes)
  return total / 2**20


def _time_fresh(step, p, s, args) -> float:
  """Times a donating step: each call consumes the previous outputs."""
  state = [jax.tree.map(jnp.copy, p), jax.tree.map(jnp.copy, s)]

  def call():
    state[0], state[1] = step(state[0], state[1])
    return state[0]

  call()
  jax.block_until_ready(state[0])
  best = float('inf')
  for _ in range(3):
    t0 = time.perf_counter()
    for _ in range(args.repeats):
      call()
    jax.block_until_ready(state[0])
    best = min(best, (time.perf_counter() - t0) / args.repeats)
  return best


def resnet50_shapes() -> list[tuple[int, ...]]:
  """The 54 kernels of ResNet-50 (v1.5, 1000 classes)."""
  shapes, c_in = [(7, 7, 3, 64)], 64
  for blocks, width in zip([3, 4, 6, 3], [64, 128, 256, 512]):
    for b in range(blocks):
      shapes += [(1, 1, c_in, width), (3, 3, width, width),
                 (1, 1, width, 4 * width)]
      if b == 0:
        shapes.append((1, 1, c_in, 4 * width))
      c_in = 4 * width
  return shapes + [(2048, 1000)]


def mask_update_time(args) -> None:
  shapes = resnet50_shapes()
  keys = jax.random.split(jax.random.PRNGKey(0), 2 * len(shapes))
  params = {f'layer_{i:02d}': jax.random.normal(keys[i], s) * 0.05
            for i, s in enumerate(shapes)}
  grads = {f'layer_{i:02d}': jax.random.normal(keys[len(shapes) + i], s)
           for i, s in enumerate(shapes)}
  n = sum(int(np.prod(s)) for s in shapes)
  for method in ['rigl', 'set', 'snfs']:
    tx = rigl_jax.sparsify(optax.sgd(0.1, momentum=0.9), method, sparsity=0.9,
                           distribution='erk', update_freq=1, end_step=10**8,
                           drop_fraction_schedule='constant')
    p, s = rigl_jax.masked_init(tx, params)
    upd = jax.jit(tx.update)
    t = _time(upd, grads, s, p, repeats=2)
    print(f'{method} mask update on a ResNet-50-sized tree ({n / 1e6:.1f}M '
          f'weights, ERK 90%): {t:.3f} s')


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--width', type=int, default=1024)
  parser.add_argument('--batch', type=int, default=256)
  parser.add_argument('--update_freq', type=int, default=100)
  parser.add_argument('--repeats', type=int, default=20)
  parser.add_argument('--skip_resnet', action='store_true')
  parser.add_argument('--no_tune_allocator', action='store_true',
                      help='leave glibc malloc as it is (see '
                      'rigl_jax/cpu_allocator.py)')
  args = parser.parse_args()
  if not args.no_tune_allocator:
    tuned = cpu_allocator.keep_large_allocations_on_heap()
    print(f'allocator: large allocations kept on the heap: {tuned}')
  step_times(args)
  peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**10
  print(f'peak host memory of this process so far: {peak:.0f} MiB')
  if not args.skip_resnet:
    mask_update_time(args)


if __name__ == '__main__':
  main()
