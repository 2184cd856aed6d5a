"""Benchmark: inference with the sparse weights vs the dense model, on CPU.

For each model and sparsity, masks are drawn as a sparse training run ends
with them (ERK, `rigl_jax.static`; the LSTM's embedding stays dense as in
`configs/shakespeare_lstm.py`), the masked params are written with
`rigl_jax.deploy.export` and read back with `rigl_jax.deploy.sparse_inference.load`, whose
outputs are checked against the masked dense model. Then it times:

* latency: one example (batch 1; one sequence for the LSTM);
* throughput: a batch of ``--batch`` examples (examples or tokens per second);

for the dense model (``model.apply`` under ``jax.jit``) and the sparse one,
in interleaved rounds (a block of dense calls and a block of sparse calls
per round, in a random order): times are medians over rounds, and each
speed-up the median of the rounds' ratios, so the machine's drift cancels
out. The results print as a Markdown table. With
``--kernels`` it first times one 1024x1024 layer at 90% sparsity through
every CPU sparse kernel considered (scipy, `jax.experimental.sparse` BCOO and
BCSR) against the dense product.

With ``--masks static,srigl`` the MLPs are also timed with SRigL's
constant fan-in masks, exported ``condensed`` (`rigl_jax.deploy.condensed`)
and, for comparison, as CSR.

Usage:
  python benchmarks/sparse_inference.py [--models mlp4096,char_lstm,default]
      [--sparsities 0.8,0.9,0.95,0.98] [--batch 256] [--seq_len 32]
      [--bcsr_min_columns 32] [--masks static,srigl] [--kernels]
"""

from __future__ import annotations

import argparse
import itertools
import os
import tempfile
import time
from typing import Any, Callable

import jax
from jax.experimental import sparse as jsparse
import jax.numpy as jnp
import numpy as np
import optax
import scipy
import scipy.sparse

import rigl_jax
from rigl_jax.deploy import export
from rigl_jax.experiment import models
from rigl_jax.deploy import sparse_inference

# name: (model name, kwargs, num_classes, input kind, description)
MODELS = {
    'mlp4096': ('mlp', {'hidden_sizes': (4096, 4096)}, 10, 'image',
                'MLP 784-4096-4096-10'),
    'char_lstm': ('char_lstm', {'embed_dim': 128, 'hidden_size': 512,
                                'num_layers': 2}, 84, 'text',
                  'char-LSTM 2x512 (embed 128, vocab 84)'),
    'default': ('mlp', {'hidden_sizes': (1024, 1024)}, 10, 'image',
                'default MLP 784-1024-1024-10'),
}


def _time(fn: Callable[[], Any], min_block_s: float = 0.15,
          blocks: int = 5) -> float:
  """Seconds per call: the fastest of ``blocks`` blocks of calls."""
  jax.block_until_ready(fn())
  t0 = time.perf_counter()
  jax.block_until_ready(fn())
  once = max(time.perf_counter() - t0, 1e-6)
  calls = max(1, int(min_block_s / once))
  best = float('inf')
  for _ in range(blocks):
    t0 = time.perf_counter()
    for _ in range(calls):
      out = fn()
    jax.block_until_ready(out)
    best = min(best, (time.perf_counter() - t0) / calls)
  return best


def _paired(dense: Callable[[], Any], sparse: Callable[[], Any],
            rounds: int = 9, min_block_s: float = 0.03
            ) -> tuple[float, float, float]:
  """(dense s/call, sparse s/call, speed-up), timed in interleaved rounds.

  Each round times a block of dense calls and a block of sparse ones, in a
  random order; the times are medians over rounds and the speed-up is the
  median of the rounds' ratios, so that the machine's drift (which moves a
  jitted dense call by 2x here over a minute) cancels out.
  """
  fns = {'dense': dense, 'sparse': sparse}
  calls = {k: max(1, int(min_block_s / _time(fn, min_block_s / 3, 1)))
           for k, fn in fns.items()}
  times = {k: [] for k in fns}
  order = np.random.default_rng(0)
  for _ in range(rounds):
    for k in order.permutation(list(fns)):
      # Let the other block's worker threads (numba's OpenMP, XLA's pool)
      # stop spinning before timing: they would slow this block down.
      time.sleep(0.05)
      fns[k]()
      t0 = time.perf_counter()
      for _ in range(calls[k]):
        out = fns[k]()
      jax.block_until_ready(out)
      times[k].append((time.perf_counter() - t0) / calls[k])
  d, s = np.asarray(times['dense']), np.asarray(times['sparse'])
  return float(np.median(d)), float(np.median(s)), float(np.median(d / s))


def _inputs(kind: str, batch: int, seq_len: int, num_classes: int,
            seed: int = 0) -> np.ndarray:
  rng = np.random.default_rng(seed)
  if kind == 'text':
    return rng.integers(0, num_classes, (batch, seq_len)).astype(np.int32)
  # Fashion-MNIST-like: about half the pixels are background (0).
  x = rng.random((batch, 28, 28, 1), np.float32)
  return np.where(x < 0.5, 0.0, x).astype(np.float32)


def _masked(params: Any, sparsity: float, kind: str,
            method: str = 'static') -> tuple[Any, Any]:
  """Params masked as a run of ``method`` ends (static: random ERK masks;
  srigl: constant fan-in ERK masks)."""
  tx = rigl_jax.sparsify(optax.identity(), method, sparsity=sparsity,
                         distribution='erk', end_step=1,
                         is_sparse=['kernel$'] if kind == 'text' else None)
  params, state = rigl_jax.masked_init(tx, params)
  return jax.device_get(params), rigl_jax.get_masks(state)


# (masks, export's condensed flag, label): unstructured masks as CSR; SRigL's
# constant fan-in masks condensed, and the same masks as CSR.
VARIANTS = {'static': [('static', True, 'unstructured, CSR')],
            'srigl': [('srigl', True, 'SRigL, condensed'),
                      ('srigl', False, 'SRigL, CSR')]}


def bench_model(key: str, sparsities: list[float], batch: int, seq_len: int,
                bcsr_min_columns: int | None, workdir: str,
                masks_kinds: tuple[str, ...] = ('static',)
                ) -> list[dict[str, Any]]:
  """Times the dense model and its sparse export at each sparsity."""
  name, kwargs, num_classes, kind, _ = MODELS[key]
  model = models.get_model(name, num_classes=num_classes, **kwargs)
  x1 = _inputs(kind, 1, seq_len, num_classes)
  xb = _inputs(kind, batch, seq_len, num_classes, seed=1)
  params = jax.jit(lambda: model.init(jax.random.PRNGKey(0), x1,
                                      train=False))()['params']
  apply = jax.jit(lambda p, x: model.apply({'params': p}, x, train=False))
  per_example = seq_len if kind == 'text' else 1
  n_dense = sum(int(np.size(p)) for p in jax.tree.leaves(params))
  rows = []
  variants = [v for m in masks_kinds for v in VARIANTS[m]
              if not (m == 'srigl' and kind == 'text')]
  masked_by = {}  # (sparsity, method) -> masked params and masks, once
  for sparsity, (method, condensed, label) in itertools.product(
      sparsities, variants):
    if (sparsity, method) not in masked_by:
      masked_by[sparsity, method] = _masked(params, sparsity, kind, method)
    masked, masks = masked_by[sparsity, method]
    path = os.path.join(workdir, f'{key}_{sparsity}_{label[:5]}.npz')
    summary = export.export(path, masked, masks=masks, condensed=condensed)
    sparse = sparse_inference.load(path, name=name,
                                   bcsr_min_columns=bcsr_min_columns)
    error = float(np.max(np.abs(sparse(xb[:8]) - np.asarray(
        apply(masked, xb[:8])))))
    dense_1, sparse_1, speedup_1 = _paired(lambda: apply(params, x1),
                                           lambda: sparse(x1))
    dense_b, sparse_b, speedup_b = _paired(lambda: apply(params, xb),
                                           lambda: sparse(xb), rounds=5)
    nnz = sum(int(np.count_nonzero(p)) for p in jax.tree.leaves(masked))
    rows.append({
        'model': key, 'sparsity': sparsity, 'masks': label,
        'params': n_dense, 'nnz': nnz,
        'dense_bytes': summary.dense_bytes, 'file_bytes': summary.file_bytes,
        'dense_1': dense_1, 'sparse_1': sparse_1,
        'dense_b': batch * per_example / dense_b,
        'sparse_b': batch * per_example / sparse_b, 'error': error,
        'speedup_1': speedup_1, 'speedup_b': speedup_b,
    })
    print(f'  {key} s={sparsity} {label}: batch 1 {dense_1 * 1e3:.3f} -> '
          f'{sparse_1 * 1e3:.3f} ms, batch {batch} {dense_b * 1e3:.1f} -> '
          f'{sparse_b * 1e3:.1f} ms, max |diff| {error:.1e}', flush=True)
  return rows


def markdown(rows: list[dict[str, Any]], batch: int, seq_len: int) -> str:
  """The results as a Markdown table."""
  lines = [
      f'| model | sparsity | masks, encoding | nonzeros | file: dense / '
      f'export | batch 1 latency: dense | sparse | speed-up | batch {batch} '
      f'throughput: dense | sparse | speed-up |',
      '| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |',
  ]
  for r in rows:
    unit = 'tok/s' if r['model'] == 'char_lstm' else '/s'
    lines.append(
        f"| {MODELS[r['model']][4]} | {r['sparsity']:.0%} | {r['masks']} | "
        f"{r['nnz'] / 1e6:.2f}M / {r['params'] / 1e6:.2f}M | "
        f"{r['dense_bytes'] / 2**20:.1f} / {r['file_bytes'] / 2**20:.2f} MiB"
        f" | {r['dense_1'] * 1e3:.3f} ms | {r['sparse_1'] * 1e3:.3f} ms | "
        f"**{r['speedup_1']:.2f}x** | "
        f"{r['dense_b']:,.0f} {unit} | {r['sparse_b']:,.0f} {unit} | "
        f"**{r['speedup_b']:.2f}x** |")
  lines.append('')
  lines.append(f'char-LSTM: one example is a sequence of {seq_len} '
               'characters; throughput in tokens per second.')
  return '\n'.join(lines)


def kernels(size: int = 1024, sparsity: float = 0.9,
            batch: int = 256) -> str:
  """One layer through every candidate kernel, as a Markdown table."""
  rng = np.random.default_rng(0)
  w = (rng.standard_normal((size, size)) *
       (rng.random((size, size)) >= sparsity)).astype(np.float32)
  layer = sparse_inference.Linear(w, None, max_density=1.0)
  csc_t = scipy.sparse.csr_matrix(w).T  # W.T in CSC form
  wt = jnp.asarray(w.T)
  bcoo, bcsr = jsparse.BCOO.fromdense(wt), jsparse.BCSR.fromdense(wt)
  matmul = jax.jit(lambda a, x: a @ x)
  lines = [f'| kernel ({size}x{size}, {sparsity:.0%} sparse) | batch 1 | '
           f'batch {batch} |', '| --- | --- | --- |']
  for label, fn, on_device in (
      ('dense, jax.jit', lambda x: matmul(wt, x), True),
      ('scipy CSC, `csc_matrix @ x`', lambda x: csc_t @ x, False),
      ('`sparse_inference.Linear` (scipy below 32 columns, else BCSR)',
       layer, False),
      ('jax.experimental.sparse BCOO, jit', lambda x: matmul(bcoo, x), True),
      ('jax.experimental.sparse BCSR, jit', lambda x: matmul(bcsr, x), True),
  ):
    cells = []
    for n in (1, batch):
      x = rng.standard_normal((size, n)).astype(np.float32)
      x = jnp.asarray(x) if on_device else x
      cells.append(f'{_time(lambda: fn(x), 0.1, 3) * 1e3:.3f} ms')
    lines.append(f'| {label} | {cells[0]} | {cells[1]} |')
  return '\n'.join(lines)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--models', default='mlp4096,char_lstm,default')
  parser.add_argument('--sparsities', default='0.8,0.9,0.95,0.98')
  parser.add_argument('--batch', type=int, default=256)
  parser.add_argument('--seq_len', type=int, default=32)
  parser.add_argument('--bcsr_min_columns', type=int,
                      default=sparse_inference.DEFAULT_BCSR_MIN_COLUMNS,
                      help='columns from which sparse layers use BCSR '
                      '(0: scipy only)')
  parser.add_argument('--masks', default='static',
                      help='static (unstructured ERK masks, CSR) and/or '
                      'srigl (constant fan-in masks, condensed and CSR)')
  parser.add_argument('--kernels', action='store_true',
                      help='also compare the sparse kernels on one layer')
  args = parser.parse_args()
  unknown = set(args.masks.split(',')) - set(VARIANTS)
  if unknown:
    parser.error(f'--masks: unknown {sorted(unknown)}; valid: '
                 f'{", ".join(VARIANTS)}')
  print(f'{os.cpu_count()} CPUs, jax {jax.__version__} '
        f'({jax.devices()[0].platform}), scipy {scipy.__version__}, '
        f'load average {os.getloadavg()[0]:.1f}', flush=True)
  if args.kernels:
    print(kernels(), flush=True)
    print()
  rows = []
  with tempfile.TemporaryDirectory() as workdir:
    for key in args.models.split(','):
      rows += bench_model(key, [float(s) for s in args.sparsities.split(',')],
                          args.batch, args.seq_len,
                          args.bcsr_min_columns or None, workdir,
                          tuple(args.masks.split(',')))
  print()
  print(markdown(rows, args.batch, args.seq_len))
  print(f'\nload average at the end: {os.getloadavg()[0]:.1f}')


if __name__ == '__main__':
  main()
