"""Tables and plots of the evidence sweeps, from the raw results only.

Reads every ``<results>/<experiment>/<run>/results.json`` (and the run's
``metrics.jsonl``) and writes, per experiment, into ``--out``:

* ``<experiment>.csv`` / ``<experiment>.md``: per method, distribution,
  sparsity and training length, the test metric as mean ± std over seeds,
  with the measured sparsity and the training / inference FLOPs relative to
  dense (`rigl_jax.analysis.model_flops.report` on the run's own config); the Markdown also
  has one method x sparsity table per distribution and the paper's
  comparisons as per-seed differences;
* ``<experiment>_vs_sparsity.png``: the test metric against sparsity, one
  panel per distribution, error bars over seeds;
* ``<experiment>_vs_flops.png``: the test metric against training FLOPs;
* ``<experiment>_layer_sparsity.png``: per-layer sparsity of ERK and
  uniform (`rigl_jax.sparsity_distribution`) with the sparsity measured in
  the runs' final masks;
* ``<experiment>_mask_churn.png``: ``train_mask_churn`` over training for
  RigL and SET.

Dense runs whose model has fewer parameters than the experiment's largest
are "small-dense" and are matched to the nearest swept sparsity by
parameter count. Ticket searches (results with a ``curve``) are drawn on the
sparsity plot too.

  python experiments/make_report.py  # experiments/results -> experiments/
"""

from __future__ import annotations

import argparse
import collections
import csv
import json
import math
import os
import sys
from typing import Any, Optional

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
  sys.path.insert(0, REPO)

import matplotlib  # pylint: disable=g-import-not-at-top
matplotlib.use('Agg')
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
import ml_collections  # pylint: disable=g-import-not-at-top

from rigl_jax.analysis import model_flops  # pylint: disable=g-import-not-at-top

HERE = os.path.dirname(os.path.abspath(__file__))
METHOD_ORDER = ('dense', 'small_dense', 'pruning', 'rigl', 'snfs', 'set',
                'static', 'imp', 'cs')
LABELS = {'dense': 'Dense', 'small_dense': 'Small-dense', 'static': 'Static',
          'set': 'SET', 'snfs': 'SNFS', 'rigl': 'RigL', 'pruning': 'Pruning',
          'imp': 'IMP (ticket)', 'cs': 'CS (ticket)'}
COLORS = {'dense': 'black', 'small_dense': 'tab:gray', 'static': 'tab:blue',
          'set': 'tab:orange', 'snfs': 'tab:purple', 'rigl': 'tab:red',
          'pruning': 'tab:green', 'imp': 'tab:brown', 'cs': 'tab:olive'}
DIST_LABELS = {'uniform': 'Uniform', 'erk': 'ERK', '-': '-'}
SMALL_DENSE_TOLERANCE = 0.02  # |matched - swept sparsity| to snap to it


# ----------------------------------------------------------------- loading


def _read_jsonl(path: str) -> list[dict[str, Any]]:
  rows = []
  if os.path.exists(path):
    with open(path, encoding='utf-8') as f:
      for line in f:
        line = line.strip()
        if line:
          rows.append(json.loads(line))
  return rows


def load_experiment(exp_dir: str) -> tuple[list[dict], list[dict]]:
  """``(runs, tickets)`` of one experiment folder.

  A run is a dict with its ``results`` (results.json), ``metrics`` (the
  metrics.jsonl rows) and ``name``; ticket searches (results with a
  ``curve``) are returned apart.
  """
  runs, tickets = [], []
  for root, _, files in sorted(os.walk(exp_dir)):
    if 'results.json' not in files:
      continue
    with open(os.path.join(root, 'results.json'), encoding='utf-8') as f:
      results = json.load(f)
    run = {'name': os.path.relpath(root, exp_dir), 'results': results,
           'metrics': _read_jsonl(os.path.join(root, 'metrics.jsonl'))}
    (tickets if 'curve' in results else runs).append(run)
  return runs, tickets


def metric_of(runs: list[dict]) -> str:
  """``'test_accuracy'`` or ``'test_bits_per_char'``."""
  for run in runs:
    for m in ('test_accuracy', 'test_bits_per_char'):
      if m in run['results']:
        return m
  raise ValueError('no run has test_accuracy or test_bits_per_char')


class FlopsCache:
  """`rigl_jax.analysis.model_flops.report` per distinct config (seed aside)."""

  def __init__(self):
    self._cache: dict[str, dict] = {}

  def __call__(self, config: dict) -> dict:
    key = dict(config)
    key.pop('seed', None)
    key = json.dumps(key, sort_keys=True, default=str)
    if key not in self._cache:
      self._cache[key] = model_flops.report(ml_collections.ConfigDict(config))
    return self._cache[key]


def describe(runs: list[dict], flops: FlopsCache) -> None:
  """Adds ``method``, ``distribution``, ``sparsity``, ``multiplier``,
  ``seed``, ``value``, ``training_flops`` and ``inference_flops`` to each
  run (in place). FLOPs are relative to the experiment's largest dense
  model trained 1x."""
  metric = metric_of(runs)
  for run in runs:
    cfg = run['results']['config']
    run['report'] = flops(cfg)
  dense_ref = max(r['report']['dense_inference_flops'] for r in runs)
  full_params = max(r['results'].get('num_params', 0) for r in runs)
  swept = sorted({float(r['results']['config']['sparsity']['sparsity'])
                  for r in runs
                  if r['results']['config']['sparsity']['method'] != 'dense'})
  for run in runs:
    res, cfg, rep = run['results'], run['results']['config'], run['report']
    method = cfg['sparsity']['method']
    dist = cfg['sparsity'].get('distribution', 'erk')
    sparsity = float(cfg['sparsity']['sparsity'])
    scale = rep['dense_inference_flops'] / dense_ref
    if method == 'dense':
      dist, sparsity = '-', 0.0
      params = res.get('num_params', full_params)
      if params < full_params:
        method = 'small_dense'
        sparsity = 1.0 - params / full_params
        near = min(swept, key=lambda s: abs(s - sparsity), default=None)
        if near is not None and abs(near - sparsity) <= SMALL_DENSE_TOLERANCE:
          sparsity = near
    run.update(
        method=method, distribution=dist, sparsity=round(sparsity, 6),
        multiplier=float(cfg.get('training_multiplier', 1.0)),
        seed=cfg.get('seed'), value=float(res[metric]),
        training_flops=rep['training_ratio'][cfg['sparsity']['method']]
        * scale,
        inference_flops=(scale if cfg['sparsity']['method'] == 'dense'
                         else rep['inference_ratio'] * scale),
        measured_sparsity=float(res.get('global_sparsity', 0.0)))


# ----------------------------------------------------------------- tables


def _mean_std(xs: list[float]) -> tuple[float, float]:
  m = sum(xs) / len(xs)
  if len(xs) < 2:
    return m, 0.0
  return m, math.sqrt(sum((x - m) ** 2 for x in xs) / (len(xs) - 1))


def _method_key(method: str, mult: float) -> tuple:
  return (METHOD_ORDER.index(method) if method in METHOD_ORDER else 99, mult)


def summarize(runs: list[dict]) -> list[dict]:
  """One row per (method, distribution, sparsity, multiplier): mean ± std
  over seeds of the metric, and the group's FLOPs and sizes."""
  groups = collections.defaultdict(list)
  for r in runs:
    groups[(r['method'], r['distribution'], r['sparsity'],
            r['multiplier'])].append(r)
  rows = []
  for (method, dist, sparsity, mult), rs in groups.items():
    mean, std = _mean_std([r['value'] for r in rs])
    rows.append({
        'method': method, 'distribution': dist, 'sparsity': sparsity,
        'training_multiplier': mult, 'n': len(rs),
        'seeds': ' '.join(str(r['seed']) for r in
                          sorted(rs, key=lambda r: str(r['seed']))),
        'mean': mean, 'std': std,
        'measured_sparsity': _mean_std(
            [r['measured_sparsity'] for r in rs])[0],
        'training_flops': _mean_std([r['training_flops'] for r in rs])[0],
        'inference_flops': _mean_std([r['inference_flops'] for r in rs])[0],
        'num_params': rs[0]['results'].get('num_params'),
        'steps': rs[0]['results'].get('steps'),
        'wall_time_s': _mean_std([float(r['results'].get('wall_time_s', 0))
                                  for r in rs])[0],
    })
  rows.sort(key=lambda r: (r['distribution'] != '-', r['distribution'],
                           _method_key(r['method'], r['training_multiplier']),
                           r['sparsity']))
  return rows


def _label(method: str, mult: float) -> str:
  label = LABELS.get(method, method)
  return label if mult == 1.0 else f'{label} {mult:g}x'


def _fmt_value(metric: str, mean: float, std: Optional[float] = None) -> str:
  if metric == 'test_accuracy':
    s = f'{100 * mean:.2f}'
    return s if std is None else f'{s} ± {100 * std:.2f}'
  s = f'{mean:.3f}'
  return s if std is None else f'{s} ± {std:.3f}'


def _metric_title(metric: str) -> str:
  return ('test accuracy (%)' if metric == 'test_accuracy'
          else 'test bits per character (lower is better)')


def write_csv(rows: list[dict], metric: str, path: str) -> None:
  columns = ['method', 'distribution', 'sparsity', 'training_multiplier',
             'n', 'seeds', f'{metric}_mean', f'{metric}_std',
             'measured_sparsity', 'training_flops', 'inference_flops',
             'num_params', 'steps', 'wall_time_s']
  with open(path, 'w', newline='', encoding='utf-8') as f:
    w = csv.writer(f)
    w.writerow(columns)
    for r in rows:
      w.writerow([r['method'], r['distribution'], r['sparsity'],
                  r['training_multiplier'], r['n'], r['seeds'],
                  f"{r['mean']:.6f}", f"{r['std']:.6f}",
                  f"{r['measured_sparsity']:.6f}",
                  f"{r['training_flops']:.6f}",
                  f"{r['inference_flops']:.6f}", r['num_params'],
                  r['steps'], f"{r['wall_time_s']:.1f}"])


def pivot(rows: list[dict], metric: str, distribution: str) -> list[str]:
  """Markdown: methods (rows) x sparsities (columns) for one distribution,
  dense and small-dense included."""
  sparse = [r for r in rows if r['distribution'] == distribution]
  sparsities = sorted({r['sparsity'] for r in sparse})
  if not sparsities:
    return []
  dense = [r for r in rows if r['method'] == 'dense']
  small = {r['sparsity']: r for r in rows if r['method'] == 'small_dense'}
  lines = ['| method | ' + ' | '.join(f'{100 * s:g}%' for s in sparsities)
           + ' |', '|---|' + '---|' * len(sparsities)]
  for d in dense:
    cell = _fmt_value(metric, d['mean'], d['std'])
    lines.append(f"| {_label('dense', d['training_multiplier'])} (0%) | "
                 + ' | '.join([cell] * len(sparsities)) + ' |')
  if small:
    lines.append('| Small-dense | ' + ' | '.join(
        _fmt_value(metric, small[s]['mean'], small[s]['std'])
        if s in small else '' for s in sparsities) + ' |')
  keys = sorted({(r['method'], r['training_multiplier']) for r in sparse},
                key=lambda k: _method_key(*k))
  for method, mult in keys:
    cells = []
    for s in sparsities:
      match = [r for r in sparse if r['method'] == method and
               r['training_multiplier'] == mult and r['sparsity'] == s]
      cells.append(_fmt_value(metric, match[0]['mean'], match[0]['std'])
                   if match else '')
    lines.append(f'| {_label(method, mult)} | ' + ' | '.join(cells) + ' |')
  return lines


def _per_seed(runs: list[dict], method: str, dist: str, sparsity: float,
              mult: float = 1.0) -> dict[Any, float]:
  return {r['seed']: r['value'] for r in runs
          if r['method'] == method and r['distribution'] == dist
          and r['sparsity'] == sparsity and r['multiplier'] == mult}


def _diff(a: dict, b: dict) -> Optional[tuple[float, float, int]]:
  """Mean ± std over the seeds both have of a[seed] - b[seed]."""
  seeds = sorted(set(a) & set(b), key=str)
  if not seeds:
    return None
  mean, std = _mean_std([a[s] - b[s] for s in seeds])
  return mean, std, len(seeds)


def comparisons(runs: list[dict], metric: str) -> list[dict]:
  """The paper's comparisons as per-seed differences (same seed: same
  initial weights and data order). Positive = the first method is better
  (for bits per character the sign is flipped)."""
  sign = 1.0 if metric == 'test_accuracy' else -1.0
  out = []
  dists = sorted({r['distribution'] for r in runs} - {'-'})
  sparsities = sorted({r['sparsity'] for r in runs
                       if r['distribution'] != '-'})
  dense = {m: {r['seed']: r['value'] for r in runs
               if r['method'] == 'dense' and r['multiplier'] == m}
           for m in (1.0, 2.0)}
  pairs = [('rigl', 1.0, 'set', 1.0), ('set', 1.0, 'static', 1.0),
           ('rigl', 1.0, 'static', 1.0), ('rigl', 1.0, 'snfs', 1.0),
           ('rigl', 1.0, 'pruning', 1.0), ('rigl', 2.0, 'pruning', 1.0),
           ('rigl', 2.0, 'rigl', 1.0), ('static', 2.0, 'static', 1.0)]
  for dist in dists:
    for s in sparsities:
      for m1, x1, m2, x2 in pairs:
        d = _diff(_per_seed(runs, m1, dist, s, x1),
                  _per_seed(runs, m2, dist, s, x2))
        if d:
          out.append({'comparison': f'{_label(m1, x1)} - {_label(m2, x2)}',
                      'distribution': dist, 'sparsity': s,
                      'mean': sign * d[0], 'std': d[1], 'n': d[2]})
      for ref_mult, method, mult in ((1.0, 'rigl', 1.0), (1.0, 'rigl', 2.0),
                                     (1.0, 'static', 2.0), (2.0, 'rigl', 2.0),
                                     (2.0, 'static', 2.0)):
        d = _diff(dense[ref_mult], _per_seed(runs, method, dist, s, mult))
        if d:
          out.append({'comparison': f'{_label("dense", ref_mult)} - '
                                    f'{_label(method, mult)} (gap)',
                      'distribution': dist, 'sparsity': s,
                      'mean': sign * d[0], 'std': d[1], 'n': d[2]})
  if 'erk' in dists and 'uniform' in dists:
    methods = sorted({r['method'] for r in runs if r['distribution'] == 'erk'},
                     key=lambda m: _method_key(m, 1.0))
    for method in methods:
      for s in sparsities:
        d = _diff(_per_seed(runs, method, 'erk', s),
                  _per_seed(runs, method, 'uniform', s))
        if d:
          out.append({'comparison': f'{_label(method, 1.0)}: ERK - uniform',
                      'distribution': 'erk vs uniform', 'sparsity': s,
                      'mean': sign * d[0], 'std': d[1], 'n': d[2]})
  for dist in dists:
    for s in sparsities:
      d = _diff(_per_seed(runs, 'rigl', dist, s),
                _per_seed(runs, 'small_dense', '-', s))
      if d:
        out.append({'comparison': 'RigL - Small-dense',
                    'distribution': dist, 'sparsity': s,
                    'mean': sign * d[0], 'std': d[1], 'n': d[2]})
  return out


def _sparsity_cell(row: dict) -> str:
  if row['method'] == 'small_dense':
    return f"{100 * row['sparsity']:g}% (by parameter count) / dense"
  return (f"{100 * row['sparsity']:g}% / "
          f"{100 * row['measured_sparsity']:.2f}%")


def write_markdown(name: str, runs: list[dict], rows: list[dict],
                   metric: str, tickets: list[dict], path: str) -> None:
  scale = 100.0 if metric == 'test_accuracy' else 1.0
  unit = 'points' if metric == 'test_accuracy' else 'bits/char'
  seeds = sorted({str(r['seed']) for r in runs})
  lines = [f'# {name}: {_metric_title(metric)}', '',
           f'{len(runs)} runs, seeds {", ".join(seeds)}; mean ± std over '
           'seeds (sample std). Generated by `experiments/make_report.py` '
           'from `experiments/results/' + name + '/`; do not edit.', '']
  for dist in ('erk', 'uniform'):
    table = pivot(rows, metric, dist)
    if table:
      lines += [f'## {DIST_LABELS[dist]}', ''] + table + ['']
  better = ('higher accuracy' if metric == 'test_accuracy'
            else 'fewer bits/char')
  lines += ['## Comparisons (per-seed differences)', '',
            f'Positive: the first is better ({better}), in {unit}; '
            'mean ± std over the seeds both have.', '',
            '| comparison | distribution | sparsity | difference | seeds |',
            '|---|---|---|---|---|']
  for c in comparisons(runs, metric):
    lines.append(f"| {c['comparison']} | {c['distribution']} | "
                 f"{100 * c['sparsity']:g}% | {scale * c['mean']:+.2f} ± "
                 f"{scale * c['std']:.2f} | {c['n']} |")
  lines += ['', '## All groups', '',
            '| method | distribution | sparsity (target / measured) | '
            'training | n | ' + _metric_title(metric) +
            ' | training FLOPs (x dense 1x) | inference FLOPs (x dense) | '
            'params | steps | wall time (s) |',
            '|---|---|---|---|---|---|---|---|---|---|---|']
  for r in rows:
    lines.append(
        f"| {LABELS.get(r['method'], r['method'])} | "
        f"{DIST_LABELS.get(r['distribution'], r['distribution'])} | "
        f"{_sparsity_cell(r)} | "
        f"{r['training_multiplier']:g}x | {r['n']} | "
        f"{_fmt_value(metric, r['mean'], r['std'])} | "
        f"{r['training_flops']:.3f} | {r['inference_flops']:.3f} | "
        f"{r['num_params']} | {r['steps']} | {r['wall_time_s']:.0f} |")
  if tickets:
    lines += ['', '## Ticket searches', '']
    lines += ['One search each (seed 0), from `experiments/results/' + name +
              '/tickets_*`. Training FLOPs: every training the ticket took '
              '(IMP: all rounds so far; CS: its search rounds and the '
              'retraining), relative to dense 1x.', '']
    for t in tickets:
      kind = t['results'].get('config', {}).get('ticket_search', 'ticket')
      lines += [f"`{t['name']}` ({LABELS.get(kind, kind)}):", '',
                '| sparsity | ' + _metric_title(metric) +
                ' | training FLOPs (x dense 1x) |', '|---|---|---|']
      for p in ticket_points(t):
        flops = ('' if p['training_flops'] is None
                 else f"{p['training_flops']:.2f}")
        lines.append(f"| {100 * p['sparsity']:.1f}% | "
                     f"{_fmt_value(metric, p['test_accuracy'])} | {flops} |")
      lines.append('')
  with open(path, 'w', encoding='utf-8') as f:
    f.write('\n'.join(lines) + '\n')


def _ticket_flops_fn(config: dict):
  """``layer_sparsity -> inference FLOPs / dense`` for a ticket search's
  model, or None if its config does not describe one."""
  try:
    cfg = ml_collections.ConfigDict(config)
    build = model_flops.model_and_input
    model, shape, dtype, kwargs, _ = build(cfg)
  except (KeyError, AttributeError, ValueError, TypeError):
    return None
  ops = model_flops.layer_ops(model, shape, input_dtype=dtype,
                            apply_kwargs=kwargs)
  dense = model_flops.flops.inference_flops(ops)
  return lambda layers: model_flops.flops.inference_flops(ops, layers) / dense


def ticket_points(ticket: dict) -> list[dict]:
  """The tickets a search found, by sparsity: ``sparsity``,
  ``test_accuracy`` and ``training_flops`` (relative to dense 1x training,
  counted as `rigl_jax.analysis.flops` counts static sparse training; None if the
  config names no model).

  IMP (``curve``, one row per round): round n costs the training of rounds
  0..n, each at its mask's FLOPs (rounds after the first from the rewind
  step on). CS (``tickets``, one per lambda): ``cs.rounds`` searches with
  the dense network under a soft mask, then the ticket's training.
  """
  res = ticket['results']
  config = res.get('config', {})
  ratio = _ticket_flops_fn(config)
  steps = max(1, int(res.get('steps') or 1))
  rewind = int(res.get('rewind_step') or 0)
  retrain = (steps - rewind) / steps
  points, spent = [], 0.0
  if 'tickets' in res:  # CS
    rounds = int(config.get('cs', {}).get('rounds', res.get('rounds', 1)))
    for c in res['tickets']:
      flops = (None if ratio is None or 'layer_sparsity' not in c else
               rounds + retrain * ratio(c['layer_sparsity']))
      points.append({'sparsity': float(c['sparsity']),
                     'test_accuracy': float(c['test_accuracy']),
                     'training_flops': flops})
  else:  # IMP
    for i, c in enumerate(res.get('curve', [])):
      if ratio is None or 'layer_sparsity' not in c:
        spent = None
      elif spent is not None:
        spent += (1.0 if i == 0 else retrain) * ratio(c['layer_sparsity'])
      points.append({'sparsity': float(c['sparsity']),
                     'test_accuracy': float(c['test_accuracy']),
                     'training_flops': spent})
  return sorted(points, key=lambda p: p['sparsity'])


# ----------------------------------------------------------------- plots


def _x_of(sparsity: float) -> float:
  """Plot position: -log10(density), so 80/90/95/98% spread evenly-ish."""
  return -math.log10(max(1.0 - sparsity, 1e-6))


def _sparsity_axis(ax, sparsities: list[float]) -> None:
  ax.set_xticks([_x_of(s) for s in sparsities])
  ax.set_xticklabels([f'{100 * s:g}%' for s in sparsities])
  ax.set_xlabel('sparsity')


def _scale(metric: str) -> float:
  return 100.0 if metric == 'test_accuracy' else 1.0


ZOOM_BELOW_DENSE = 0.10  # accuracy plots show down to dense - 10 points


def _finish_grid(fig, axes, metric: str, path: str) -> None:
  """Labels a grid of metric plots, puts the legend outside, saves it."""
  axes[0][0].set_ylabel(_metric_title(metric))
  axes[0][-1].legend(fontsize=7, bbox_to_anchor=(1.01, 1.0),
                     loc='upper left')
  fig.tight_layout()
  fig.savefig(path, dpi=110, bbox_inches='tight')
  plt.close(fig)


def _clip_y(panels, rows: list[dict], metric: str, x_of) -> None:
  """Fits the y range to the methods but small-dense (whose tiniest models
  fall far below), at most `ZOOM_BELOW_DENSE` under dense for accuracy,
  and notes the points left outside. ``panels``: (axes, distribution)."""
  k = _scale(metric)
  main = [r for r in rows if r['method'] != 'small_dense']
  if not main:
    return
  lo = min(k * (r['mean'] - r['std']) for r in main)
  hi = max(k * (r['mean'] + r['std']) for r in main)
  dense = [r['mean'] for r in rows if r['method'] == 'dense']
  if metric == 'test_accuracy' and dense:
    lo = max(lo, k * (max(dense) - ZOOM_BELOW_DENSE))
  pad = 0.06 * (hi - lo) + (0.3 if metric == 'test_accuracy' else 0.02)
  lo, hi = lo - pad, hi + pad
  outside = [r for r in rows if not lo <= k * r['mean'] <= hi]
  for ax, dist in panels:
    ax.set_ylim(lo, hi)
    stacked = collections.Counter()  # a panel's notes go above each other
    for r in outside:
      if r['distribution'] not in (dist, '-'):
        continue
      below = k * r['mean'] < lo
      nth = stacked[below]
      stacked[below] += 1
      ax.annotate(
          f"{_label(r['method'], r['training_multiplier'])}"
          + (f" {DIST_LABELS[r['distribution']]}"
             if r['distribution'] != '-' else '')
          + f" {100 * r['sparsity']:g}%:\n"
          f"{_fmt_value(metric, r['mean'], r['std'])}",
          (x_of(r), lo if below else hi),
          xytext=(0, (14 + 24 * nth) * (1 if below else -1)),
          textcoords='offset points', ha='center', fontsize=6.5,
          color=COLORS.get(r['method'], 'black'),
          va='bottom' if below else 'top',
          arrowprops={'arrowstyle': '->',
                      'color': COLORS.get(r['method'], 'black')})


def plot_vs_sparsity(name: str, rows: list[dict], metric: str,
                     tickets: list[dict], path: str) -> None:
  dists = [d for d in ('uniform', 'erk')
           if any(r['distribution'] == d for r in rows)] or ['-']
  k = _scale(metric)
  fig, axes = plt.subplots(1, len(dists), figsize=(6.2 * len(dists), 4.6),
                           sharey=True, squeeze=False)
  sparsities = sorted({r['sparsity'] for r in rows
                       if r['distribution'] != '-'})
  for ax, dist in zip(axes[0], dists):
    for d in (r for r in rows if r['method'] == 'dense'):
      mult = d['training_multiplier']
      ax.axhline(k * d['mean'], color='black', lw=1.2,
                 ls='-' if mult == 1.0 else '--',
                 label=f"{_label('dense', mult)} "
                 f"({_fmt_value(metric, d['mean'], d['std'])})")
      ax.axhspan(k * (d['mean'] - d['std']), k * (d['mean'] + d['std']),
                 color='black', alpha=0.08 if mult == 1.0 else 0.04)
    series = collections.defaultdict(list)
    for r in rows:
      if r['distribution'] == dist or r['method'] == 'small_dense':
        series[(r['method'], r['training_multiplier'])].append(r)
    for (method, mult), rs in sorted(series.items(),
                                     key=lambda kv: _method_key(*kv[0])):
      rs.sort(key=lambda r: r['sparsity'])
      ax.errorbar([_x_of(r['sparsity']) for r in rs],
                  [k * r['mean'] for r in rs],
                  yerr=[k * r['std'] for r in rs], capsize=3,
                  marker='o' if mult == 1.0 else 's', ms=4,
                  ls='-' if mult == 1.0 else '--',
                  color=COLORS.get(method, None),
                  label=_label(method, mult))
    for t in tickets:
      pts = [p for p in ticket_points(t)
             if sparsities and min(sparsities) - 0.05 <= p['sparsity']]
      if pts:
        kind = t['results']['config'].get('ticket_search', 'ticket')
        ax.plot([_x_of(p['sparsity']) for p in pts],
                [k * p['test_accuracy'] for p in pts],
                ls=':', marker='x', color=COLORS.get(kind),
                label=f"{LABELS.get(kind, kind)}, 1 seed")
    _sparsity_axis(ax, sparsities)
    ax.set_title(f'{name}: {DIST_LABELS[dist]}' if dist != '-' else name)
    ax.grid(alpha=0.3)
  _clip_y(zip(axes[0], dists), rows, metric,
          lambda r: _x_of(r['sparsity']))
  _finish_grid(fig, axes, metric, path)


def plot_vs_flops(name: str, rows: list[dict], metric: str,
                  path: str, tickets: Optional[list[dict]] = None) -> None:
  dists = [d for d in ('uniform', 'erk')
           if any(r['distribution'] == d for r in rows)] or ['-']
  k = _scale(metric)
  fig, axes = plt.subplots(1, len(dists), figsize=(6.2 * len(dists), 4.6),
                           sharey=True, squeeze=False)
  for ax, dist in zip(axes[0], dists):
    series = collections.defaultdict(list)
    for r in rows:
      if r['distribution'] in (dist, '-'):
        series[(r['method'], r['training_multiplier'])].append(r)
    for (method, mult), rs in sorted(series.items(),
                                     key=lambda kv: _method_key(*kv[0])):
      rs.sort(key=lambda r: r['training_flops'])
      ax.errorbar([r['training_flops'] for r in rs],
                  [k * r['mean'] for r in rs],
                  yerr=[k * r['std'] for r in rs], capsize=2,
                  marker='o' if mult == 1.0 else 's', ms=4,
                  ls='-' if mult == 1.0 else '--',
                  color=COLORS.get(method), label=_label(method, mult))
      if method not in ('dense',):
        for r in rs:
          ax.annotate(f"{100 * r['sparsity']:g}", (r['training_flops'],
                                                   k * r['mean']),
                      fontsize=6, xytext=(2, 2), textcoords='offset points',
                      color=COLORS.get(method))
    sparsities = [r['sparsity'] for r in rows if r['distribution'] != '-']
    for t in tickets or []:
      pts = [p for p in ticket_points(t) if p['training_flops'] is not None
             and sparsities and min(sparsities) - 0.05 <= p['sparsity']]
      if pts:
        kind = t['results']['config'].get('ticket_search', 'ticket')
        ax.plot([p['training_flops'] for p in pts],
                [k * p['test_accuracy'] for p in pts], ls=':', marker='x',
                color=COLORS.get(kind),
                label=f"{LABELS.get(kind, kind)}, 1 seed")
        for p in pts:
          ax.annotate(f"{100 * p['sparsity']:.0f}", (
              p['training_flops'], k * p['test_accuracy']), fontsize=6,
                      xytext=(2, -7), textcoords='offset points',
                      color=COLORS.get(kind))
    ax.set_xscale('log')
    ax.set_xlabel('training FLOPs relative to dense 1x '
                  '(rigl_jax.analysis.flops; labels: sparsity %)')
    ax.set_title(f'{name}: {DIST_LABELS[dist]}' if dist != '-' else name)
    ax.grid(alpha=0.3, which='both')
  _clip_y(zip(axes[0], dists), rows, metric, lambda r: r['training_flops'])
  _finish_grid(fig, axes, metric, path)


def layer_sparsities(runs: list[dict], flops: Optional[FlopsCache] = None
                     ) -> tuple[list[str], dict]:
  """``(layers, {(dist, sparsity): {layer: sparsity}})`` from
  `rigl_jax.sparsity_distribution` (via `model_flops.report`) for ERK and uniform
  at every swept sparsity, trained or not, on the experiment's full-size
  model (a sparse run's config with the distribution and sparsity set)."""
  sparse = [r for r in runs if r['distribution'] != '-']
  if not sparse:
    return [], {}
  flops = flops or FlopsCache()
  template = sparse[0]['results']['config']
  out, layers = {}, []
  for s in sorted({r['sparsity'] for r in sparse}):
    for dist in ('uniform', 'erk'):
      cfg = json.loads(json.dumps(template))
      cfg['sparsity'].update(distribution=dist, sparsity=s)
      try:
        out[(dist, s)] = flops(cfg)['layer_sparsity']
      except ValueError:  # e.g. ERK cannot reach s on this model
        continue
      for layer in out[(dist, s)]:
        if layer not in layers:
          layers.append(layer)
  # Sparse leaves: those with a mask in some run (results' layer_sparsity
  # of a sparse run) or with zeros under some distribution; not biases.
  masked = {layer for r in sparse
            for layer in r['results'].get('layer_sparsity', {})}
  layers = [layer for layer in layers if layer in masked or
            any(sp.get(layer, 0.0) > 0.0 for sp in out.values())]
  return layers, out


def plot_layer_sparsity(name: str, runs: list[dict], path: str,
                        flops: Optional[FlopsCache] = None) -> None:
  """Bars: each sparse layer's sparsity under ERK (solid) and uniform
  (hatched) at every swept sparsity; dots: measured in the final masks of
  the runs (mean over runs; pruning included, dense runs not); a
  distribution no run trained is marked so in the legend."""
  layers, dist = layer_sparsities(runs, flops)
  trained = {r['distribution'] for r in runs}
  keys = sorted(dist, key=lambda k: (k[1], k[0] != 'uniform'))
  sparsities = sorted({s for _, s in dist})
  measured = collections.defaultdict(list)
  for r in runs:
    if r['distribution'] == '-':
      continue
    for layer, v in r['results'].get('layer_sparsity', {}).items():
      measured[(r['distribution'], r['sparsity'], layer)].append(v)
  cmap = plt.get_cmap('viridis')
  colors = {s: cmap(0.85 * i / max(1, len(sparsities) - 1))
            for i, s in enumerate(sparsities)}
  width = 0.8 / max(1, len(keys))
  fig, ax = plt.subplots(figsize=(max(7.0, 2.4 * len(layers) + 2), 4.6))
  for j, (d, s) in enumerate(keys):
    xs = [i - 0.4 + width * (j + 0.5) for i in range(len(layers))]
    ax.bar(xs, [100 * dist[(d, s)].get(layer, 0.0) for layer in layers],
           width=width * 0.95, color=colors[s] if d == 'erk' else 'white',
           edgecolor=colors[s], hatch='///' if d == 'uniform' else None,
           label=f'{DIST_LABELS[d]} {100 * s:g}%'
           + ('' if d in trained else ' (not trained)'))
    got = [(x, 100 * sum(measured[(d, s, layer)]) /
            len(measured[(d, s, layer)]))
           for x, layer in zip(xs, layers) if measured[(d, s, layer)]]
    if got:
      ax.plot([g[0] for g in got], [g[1] for g in got], ls='none',
              marker='o', ms=3, color='red',
              label='measured (final masks)' if j == 0 else None)
  shapes = layer_shapes(runs)
  ax.set_xticks(range(len(layers)))
  ax.set_xticklabels([f'{layer}\n{shapes.get(layer, "")}'
                      for layer in layers], fontsize=8)
  ax.set_ylabel('layer sparsity (%)')
  ax.set_ylim(0, 105)
  ax.set_title(f'{name}: per-layer sparsity, ERK (filled) vs uniform '
               '(hatched)')
  ax.grid(alpha=0.3, axis='y')
  ax.legend(fontsize=7, bbox_to_anchor=(1.01, 1.0), loc='upper left')
  fig.tight_layout()
  fig.savefig(path, dpi=110, bbox_inches='tight')
  plt.close(fig)


def layer_shapes(runs: list[dict]) -> dict[str, str]:
  """``{layer: 'AxB'}`` of the full-size model's sparse kernels."""
  import jax  # pylint: disable=g-import-not-at-top
  sparse = [r for r in runs if r['distribution'] != '-']
  if not sparse:
    return {}
  config = ml_collections.ConfigDict(sparse[0]['results']['config'])
  # The model and input exactly as flops.report builds them.
  build = model_flops.model_and_input
  model, shape, dtype, kwargs, _ = build(config)
  x = jax.ShapeDtypeStruct((1, *shape), dtype)
  params = jax.eval_shape(
      lambda x: model.init(jax.random.PRNGKey(0), x, **kwargs), x)['params']
  flat, _ = jax.tree_util.tree_flatten_with_path(params)
  from rigl_jax import paths  # pylint: disable=g-import-not-at-top
  return {paths.path_str(p): 'x'.join(str(d) for d in leaf.shape)
          for p, leaf in flat}


def plot_mask_churn(name: str, runs: list[dict], path: str) -> bool:
  """RigL vs SET mask churn over training; False if no such runs."""
  churn = [r for r in runs if r['method'] in ('rigl', 'set')
           and r['multiplier'] == 1.0 and r['metrics']]
  if not churn:
    return False
  sparsities = sorted({r['sparsity'] for r in churn})
  fig, axes = plt.subplots(1, len(sparsities),
                           figsize=(4.0 * len(sparsities), 3.6),
                           sharey=True, squeeze=False)
  for ax, s in zip(axes[0], sparsities):
    for method in ('rigl', 'set'):
      for dist, ls in (('erk', '-'), ('uniform', '--')):
        rs = [r for r in churn if r['method'] == method and
              r['distribution'] == dist and r['sparsity'] == s]
        if not rs:
          continue
        by_step = collections.defaultdict(list)
        for r in rs:
          for row in r['metrics']:
            if 'train_mask_churn' in row:
              by_step[row['step']].append(row['train_mask_churn'])
        steps = sorted(by_step)
        stats = [_mean_std(by_step[t]) for t in steps]
        mean = [100 * m for m, _ in stats]
        ax.plot(steps, mean, ls=ls, color=COLORS[method],
                label=f'{LABELS[method]} {DIST_LABELS[dist]}')
        ax.fill_between(steps, [100 * (m - d) for m, d in stats],
                        [100 * (m + d) for m, d in stats],
                        color=COLORS[method], alpha=0.12, lw=0)
    ref = [r for r in churn if r['sparsity'] == s][0]['metrics']
    drop = [(row['step'], 100 * row['train_drop_fraction']) for row in ref
            if 'train_drop_fraction' in row]
    if drop:
      ax.plot([d[0] for d in drop], [d[1] for d in drop], color='black',
              lw=0.8, ls=':', label='drop fraction (schedule)')
    ax.set_title(f'{100 * s:g}% sparsity')
    ax.set_xlabel('step')
    ax.grid(alpha=0.3)
  axes[0][0].set_ylabel('mask churn of the last update\n'
                        '(% of active connections changed)')
  axes[0][-1].legend(fontsize=7)
  fig.suptitle(f'{name}: connections changed per mask update, RigL vs SET '
               '(mean over seeds)', fontsize=10)
  fig.tight_layout()
  fig.savefig(path, dpi=110, bbox_inches='tight')
  plt.close(fig)
  return True


# ----------------------------------------------------------------- main


def report_experiment(exp_dir: str, out: str,
                      flops: Optional[FlopsCache] = None) -> list[str]:
  """Writes the tables and plots of one experiment; returns their paths."""
  name = os.path.basename(os.path.normpath(exp_dir))
  runs, tickets = load_experiment(exp_dir)
  if not runs:
    return []
  flops = flops or FlopsCache()
  describe(runs, flops)
  metric = metric_of(runs)
  rows = summarize(runs)
  paths = [os.path.join(out, f'{name}{suffix}') for suffix in
           ('.csv', '.md', '_vs_sparsity.png', '_vs_flops.png',
            '_layer_sparsity.png', '_mask_churn.png')]
  write_csv(rows, metric, paths[0])
  write_markdown(name, runs, rows, metric, tickets, paths[1])
  plot_vs_sparsity(name, rows, metric, tickets, paths[2])
  plot_vs_flops(name, rows, metric, paths[3], tickets)
  if not plot_mask_churn(name, runs, paths[5]):
    paths.pop()
  if any(r['distribution'] != '-' for r in runs):
    plot_layer_sparsity(name, runs, paths[4], flops)
  else:
    paths.pop(4)
  return paths


def main(argv: Optional[list[str]] = None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--results', default=os.path.join(HERE, 'results'),
                      help='one folder per experiment, one per run inside')
  parser.add_argument('--out', default=HERE, help='tables and plots go here')
  args = parser.parse_args(argv)
  if not os.path.isdir(args.results):
    print(f'error: no results folder {args.results!r}', file=sys.stderr)
    return 2
  os.makedirs(args.out, exist_ok=True)
  flops = FlopsCache()
  written = []
  for exp in sorted(os.listdir(args.results)):
    exp_dir = os.path.join(args.results, exp)
    if os.path.isdir(exp_dir):
      written += report_experiment(exp_dir, args.out, flops)
  for path in written:
    print(f'wrote {os.path.relpath(path)}')
  if not written:
    print(f'error: no results.json under {args.results!r}', file=sys.stderr)
    return 1
  return 0


if __name__ == '__main__':
  sys.exit(main())
