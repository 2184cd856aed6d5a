"""Benchmark: what JAX's persistent compilation cache saves a restarted job.

Compiles the README's train step (one jitted program, the mask update under
`lax.cond`) of RigL on a ResNet-50-sized parameter tree (54 kernels, 25.5M
weights, ERK 90%) in a fresh process, twice over one cache folder: the
first process compiles and writes the cache, the second is a restarted job.
With the leak check (``check_leaks=True``, the core's default) the program
holds a host callback, which JAX never writes to its cache, so the restart
compiles again; with ``check_leaks=False`` it loads the program.

Usage:
  python benchmarks/compile_cache.py [--method rigl] [--sparsity 0.9]
      [--kernels 54]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time


def one_process(method: str, sparsity: float, check_leaks: bool,
                kernels: int) -> float:
  """Seconds to lower and compile the step in this process."""
  import jax  # pylint: disable=import-outside-toplevel
  import optax  # pylint: disable=import-outside-toplevel
  import rigl_jax  # pylint: disable=import-outside-toplevel
  sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
  from sparse_step import resnet50_shapes  # pylint: disable=import-outside-toplevel

  shapes = resnet50_shapes()[:kernels]
  keys = jax.random.split(jax.random.PRNGKey(0), len(shapes))
  params = {f'layer_{i:02d}': jax.random.normal(k, s) * 0.05
            for i, (k, s) in enumerate(zip(keys, shapes))}
  tx = rigl_jax.sparsify(optax.sgd(0.1, momentum=0.9), method,
                         sparsity=sparsity, distribution='erk',
                         end_step=10**5, check_leaks=check_leaks)
  params, state = rigl_jax.masked_init(tx, params)

  def step(p, s, g):
    u, s = tx.update(g, s, p)
    return optax.apply_updates(p, u), s

  t0 = time.perf_counter()
  jax.jit(step).lower(params, state, params).compile()
  return time.perf_counter() - t0


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--method', default='rigl')
  parser.add_argument('--sparsity', type=float, default=0.9)
  parser.add_argument('--kernels', type=int, default=54,
                      help="the first K of ResNet-50's 54 kernels")
  parser.add_argument('--child', choices=['True', 'False'],
                      help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args.child:
    print(one_process(args.method, args.sparsity, args.child == 'True',
                      args.kernels))
    return
  print(f'{args.method} step on {args.kernels} of ResNet-50\'s kernels: '
        'lower + compile, first process (cache empty) and a restarted one '
        '(same cache)')
  for check in (True, False):
    with tempfile.TemporaryDirectory() as cache:
      env = dict(os.environ, JAX_COMPILATION_CACHE_DIR=cache,
                 JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS='0')
      times = [float(subprocess.run(
          [sys.executable, __file__, '--method', args.method,
           '--sparsity', str(args.sparsity), '--kernels', str(args.kernels),
           '--child', str(check)],
          env=env, check=True, capture_output=True, text=True
      ).stdout.split()[-1]) for _ in range(2)]
    print(f'check_leaks={check!s:<5}  first {times[0]:6.1f} s   '
          f'restarted {times[1]:6.1f} s')


if __name__ == '__main__':
  main()
