"""Benchmark: sparse train-step cost relative to dense, and mask-update time.

Prints, for one model in one run:
  * the time of a dense train step (inner optimizer only);
  * for each method, the time of an ordinary sparse step, of a step with a
    mask update, and the amortised cost over ``--update_freq`` steps,
    relative to dense;
  * "as users call it": the single program with `lax.cond` (no
    ``mask_update`` argument), written as in the README (nothing donated)
    and with ``donate_argnums``, each against the dense step called the
    same way, with each program's XLA scratch size;
  * the memory XLA plans for each step (arguments + outputs + scratch) and
    the process's peak host memory;
  * ``masked_init`` and one RigL/SET/SNFS mask update on a ResNet-50-sized
    parameter tree (25.5M weights in 54 kernels, ERK 90%).

Steps are timed in interleaved rounds (every program once per round, in a
random order) and each method is compared with the dense step of the same
round, so that the machine's drift cancels out.

Usage:
  python benchmarks/sparse_step.py [--model mlp|resnet20] [--width 1024]
      [--batch 256] [--sparsity 0.9] [--update_freq 100] [--rounds 15]
      [--repeats 10] [--skip_resnet] [--untuned_allocator]
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


def resnet20(classes: int = 10):
  """CIFAR ResNet-20 (0.27M params) in training mode; BatchNorm statistics
  are computed from the batch and their running averages discarded."""
  from rigl_jax.experiment import models  # pylint: disable=import-outside-toplevel
  model = models.get_model('resnet20', num_classes=classes)
  variables = model.init(jax.random.PRNGKey(0), jnp.zeros((1, 32, 32, 3)),
                         train=False)
  stats = variables['batch_stats']

  def loss(p, x, y):
    logits, _ = model.apply({'params': p, 'batch_stats': stats}, x,
                            train=True, mutable=['batch_stats'])
    return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

  return variables['params'], loss


def build_model(args):
  """(params, loss, inputs, description) of the benchmarked model."""
  if args.model == 'mlp':
    params, loss = mlp(args.width)
    shape, name = (args.batch, 784), f'MLP 784-{args.width}x3-10'
  else:
    params, loss = resnet20()
    shape, name = (args.batch, 32, 32, 3), 'ResNet-20 on 32x32x3'
  x = jax.random.normal(jax.random.PRNGKey(1), shape)
  return params, loss, x, name


def step_times(args) -> None:
  """Times every program in interleaved rounds and compares within a round.

  This VM's speed drifts by a few percent over a minute, more than the
  differences being measured; timing dense and every method in each round
  (in a random order), and taking the median over rounds of each round's
  ratio to dense, cancels the drift.
  """
  params, loss, x, name = build_model(args)
  y = jnp.arange(args.batch) % 10
  inner = optax.sgd(0.01, momentum=0.9, nesterov=True)
  n_params = sum(p.size for p in jax.tree.leaves(params))
  print(f'model: {name} ({n_params / 1e6:.2f}M params), '
        f'batch {args.batch}, sgd+nesterov, ERK {args.sparsity:.0%}, '
        f'{jax.devices()[0].platform}; '
        f'{args.rounds} interleaved rounds of {args.repeats} steps each')

  def make_step(tx, mask_update=None, donate=True):
    def step(p, s):
      g = jax.grad(loss)(p, x, y)
      if mask_update is None:
        u, s = tx.update(g, s, p)
      else:
        u, s = tx.update(g, s, p, mask_update=mask_update)
      return optax.apply_updates(p, u), s
    return jax.jit(step, donate_argnums=(0, 1) if donate else ())

  def program(tx, mask_update, p, s, donate=True):
    """(timer, planned memory, scratch) of one step.

    The timer calls the `jax.jit` function, as users do, not the AOT
    `Compiled` object: the two dispatch differently (a `Compiled` whose
    program holds a host callback, such as the leak check in the mask
    update, is called through Python on every step; `jax.jit` keeps its C++
    path unless the program has an effect).
    """
    jitted = make_step(tx, mask_update, donate)
    # Committed to the device, as the step's outputs are: the program is
    # then compiled once, for the lowering here and every timed call.
    p, s = jax.device_put((p, s), jax.devices()[0])
    compiled = jitted.lower(p, s).compile()
    analysis = compiled.memory_analysis()
    scratch = (float('nan') if analysis is None else
               analysis.temp_size_in_bytes / 2**20)
    return _Timer(jitted, p, s), step_memory_mb(compiled), scratch

  # name -> (timer, planned memory, scratch); every timer owns its state.
  # "/readme" programs are the README's example step: one jitted program,
  # nothing donated.
  programs = {'dense': program(inner, None, params, inner.init(params)),
              'dense/readme': program(inner, None, params,
                                      inner.init(params), donate=False)}
  methods = args.methods
  common = dict(sparsity=args.sparsity, distribution='erk')
  for method in methods:
    if method == 'static':
      tx = rigl_jax.static(inner, **common)
      variants = {'plain': (tx, None), 'cond/readme': (tx, None)}
    else:
      tx = rigl_jax.sparsify(inner, method, update_freq=1, end_step=10**8,
                             drop_fraction_schedule='constant', **common)
      # A schedule that never fires: the cond program's ordinary step.
      tx_cond = rigl_jax.sparsify(inner, method, begin_step=10**8,
                                  end_step=10**8 + 1, **common)
      # The same program with the branch taken on every step.
      variants = {'plain': (tx, False), 'update': (tx, True),
                  'cond': (tx_cond, None), 'cond_update': (tx, None),
                  'cond/readme': (tx_cond, None),
                  'cond_update/readme': (tx, None)}
    for kind, (t, flag) in variants.items():
      p, s = rigl_jax.masked_init(t, params)
      programs[f'{method}/{kind}'] = program(
          t, flag, p, s, donate=not kind.endswith('/readme'))

  times = {name: [] for name in programs}
  order = np.random.default_rng(0)
  for _ in range(args.rounds):
    # A fresh order each round, so that no program always runs first.
    for name in order.permutation(list(programs)):
      times[name].append(programs[name][0](args.repeats))
  times = {k: np.asarray(v) for k, v in times.items()}
  dense = times['dense']

  def ms(name):
    return f'{np.median(times[name]) * 1e3:9.2f} ms'

  print(f'{"dense step":<10}{ms("dense")}   step memory '
        f'{programs["dense"][1]:.1f} MiB')
  print('Two programs (the loop passes mask_update=True/False, as train.py '
        'does); "cond" is the single program with lax.cond. Times: median '
        'over rounds; vs dense: median [min, max] over rounds of the '
        'amortised time / that round\'s dense time.')
  print(f'{"method":<10}{"sparse step":>12}{"update step":>12}'
        f'{"amortised/" + str(args.update_freq):>16}'
        f'{"vs dense":>26}{"cond step":>12}{"memory plain/update":>24}')
  for method in methods:
    plain = times[f'{method}/plain']
    upd = times.get(f'{method}/update', plain)
    amort = ((args.update_freq - 1) * plain + upd) / args.update_freq
    ratio = amort / dense
    cond = f'{method}/cond' if f'{method}/cond' in times else f'{method}/plain'
    mem = (programs[f'{method}/plain'][1],
           programs.get(f'{method}/update', programs[f'{method}/plain'])[1])
    print(f'{method:<10}{np.median(plain) * 1e3:9.2f} ms'
          f'{np.median(upd) * 1e3:9.2f} ms{np.median(amort) * 1e3:13.2f} ms'
          f'{np.median(ratio):10.3f}x [{ratio.min():.3f}, {ratio.max():.3f}]'
          f'{ms(cond)}{mem[0]:13.1f} /{mem[1]:6.1f} MiB')
  for suffix, label, title in [
      ('/readme', 'as users', 'the README example: one jitted program, '
       'nothing donated'),
      ('', 'donated ', 'the same with donate_argnums=(0, 1)')]:
    base = times[f'dense{suffix}']
    print(f'As users call it ({title}): lax.cond, no mask_update argument, '
          f'nothing CPU-specific; a mask update every {args.update_freq} '
          f'steps; vs that dense step ({np.median(base) * 1e3:.2f} ms).')
    print(f'{"method":<18}{"plain step":>12}{"update step":>12}'
          f'{"amortised/" + str(args.update_freq):>16}{"vs dense":>26}')
    for method in methods:
      plain = times.get(f'{method}/cond{suffix}', times[f'{method}/plain'])
      upd = times.get(f'{method}/cond_update{suffix}', plain)
      amort = ((args.update_freq - 1) * plain + upd) / args.update_freq
      ratio = amort / (base if f'{method}/cond{suffix}' in times else dense)
      low, high = median_ci(ratio)
      print(f'{label}  {method:<8}{np.median(plain) * 1e3:9.2f} ms'
            f'{np.median(upd) * 1e3:9.2f} ms{np.median(amort) * 1e3:13.2f} ms'
            f'{np.median(ratio):10.3f}x [{ratio.min():.3f}, '
            f'{ratio.max():.3f}]  95% CI of the median {low:.3f}-{high:.3f}')
    scratch = {m: programs[f'{m}/cond{suffix}'][2] for m in methods
               if f'{m}/cond{suffix}' in programs}
    print('  scratch (XLA temp) per call: ' + ', '.join(
        f'{m} {v:.1f}' for m, v in scratch.items()) +
          f' MiB (dense {programs[f"dense{suffix}"][2]:.1f} MiB); kept on '
          'the heap by the sparse step itself (--untuned_allocator: glibc '
          'maps scratch above 32 MiB afresh on every call)')


def median_ci(x: np.ndarray, level: float = 0.95,
              resamples: int = 2000) -> tuple[float, float]:
  """Bootstrap confidence interval of the median of ``x`` (seeded).

  The per-round ratios of one run scatter by several percent on a shared
  VM; the interval says how far their median could move by chance within
  the run (not between runs, whose differences can be larger).

  Example:

  >>> low, high = median_ci(np.array([1.0, 1.1, 0.9, 1.05, 0.95]))
  >>> bool(0.9 <= low <= 1.0 <= high <= 1.1)
  True
  """
  rng = np.random.default_rng(0)
  medians = np.median(rng.choice(x, (resamples, len(x))), axis=1)
  tail = 100 * (1 - level) / 2
  return (float(np.percentile(medians, tail)),
          float(np.percentile(medians, 100 - tail)))


class _Timer:
  """Times a donating step: each call consumes the previous outputs."""

  def __init__(self, step, p, s):
    self._step = step
    self._state = (jax.tree.map(jnp.copy, p), jax.tree.map(jnp.copy, s))
    self(2)  # warm up

  def __call__(self, repeats: int) -> float:
    """Seconds per step over ``repeats`` steps."""
    jax.block_until_ready(self._state)
    t0 = time.perf_counter()
    for _ in range(repeats):
      self._state = self._step(*self._state)
    jax.block_until_ready(self._state)
    return (time.perf_counter() - t0) / repeats


def step_memory_mb(compiled) -> float:
  """Peak memory XLA plans for one step: arguments + outputs (less the
  donated, aliased ones) + scratch, from the compiled buffer assignment."""
  m = compiled.memory_analysis()
  if m is None:
    return float('nan')
  total = (m.argument_size_in_bytes + m.output_size_in_bytes
           - m.alias_size_in_bytes + m.temp_size_in_bytes)
  return total / 2**20


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
  del args
  shapes = resnet50_shapes()
  keys = jax.random.split(jax.random.PRNGKey(0), 2 * len(shapes))
  params = {f'layer_{i:02d}': jax.random.normal(keys[i], s) * 0.05
            for i, s in enumerate(shapes)}
  grads = {f'layer_{i:02d}': jax.random.normal(keys[len(shapes) + i], s)
           for i, s in enumerate(shapes)}
  n = sum(int(np.prod(s)) for s in shapes)
  t0 = time.perf_counter()
  tx = rigl_jax.rigl(optax.sgd(0.1, momentum=0.9), sparsity=0.9,
                     distribution='erk', end_step=10**8)
  jax.block_until_ready(rigl_jax.masked_init(tx, params))
  print(f'masked_init on a ResNet-50-sized tree ({n / 1e6:.1f}M weights, ERK '
        f'90%), compile included: {time.perf_counter() - t0:.2f} s')
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
  parser.add_argument('--model', choices=['mlp', 'resnet20'], default='mlp',
                      help='mlp: the worst case for sparse overhead (every '
                      'weight used once per example); resnet20: a '
                      'convolutional network, as in the papers')
  parser.add_argument('--width', type=int, default=1024,
                      help='hidden width of the MLP')
  parser.add_argument('--batch', type=int, default=None,
                      help='batch size (default: 256 for mlp, 64 for '
                      'resnet20)')
  parser.add_argument('--update_freq', type=int, default=100)
  parser.add_argument('--sparsity', type=float, default=0.9,
                      help='ERK sparsity of the step timings')
  parser.add_argument('--repeats', type=int, default=10,
                      help='steps per program per round')
  parser.add_argument('--rounds', type=int, default=15)
  parser.add_argument('--skip_resnet', action='store_true')
  parser.add_argument('--methods', type=lambda v: v.split(','),
                      default=['static', 'set', 'snfs', 'rigl', 'pruning'],
                      help='comma-separated methods to time (default: all)')
  parser.add_argument('--untuned_allocator', action='store_true',
                      help='turn off the glibc tuning that a sparse step '
                      'applies on CPU (rigl_jax/cpu_allocator.py): the '
                      'cond programs then map their scratch afresh on '
                      'every call')
  args = parser.parse_args()
  unknown = sorted(set(args.methods) - {'static', 'set', 'snfs', 'rigl',
                                        'pruning'})
  if unknown:
    parser.error(f'unknown --methods {unknown}; valid: static, set, snfs, '
                 'rigl, pruning')
  if args.batch is None:
    args.batch = 256 if args.model == 'mlp' else 64
  if args.untuned_allocator:
    cpu_allocator.configure(False)
    print('allocator: left untuned (--untuned_allocator)')
  step_times(args)
  peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**10
  print(f'peak host memory of this process so far: {peak:.0f} MiB')
  if not args.skip_resnet:
    mask_update_time(args)


if __name__ == '__main__':
  main()
