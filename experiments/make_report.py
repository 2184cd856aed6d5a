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

Inside, ``runs`` is `describe`'s frame (one row per run) and ``rows`` is
`summarize`'s (one row per group of seeds); ``metric`` is the experiment's
test metric and ``name`` the experiment.

  python experiments/make_report.py  # experiments/results -> experiments/
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any, Callable, Optional

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
  sys.path.insert(0, REPO)

import matplotlib  # pylint: disable=g-import-not-at-top
matplotlib.use('Agg')
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
import ml_collections  # pylint: disable=g-import-not-at-top
import numpy as np  # pylint: disable=g-import-not-at-top
import pandas as pd  # pylint: disable=g-import-not-at-top

from rigl_jax.analysis import model_flops  # pylint: disable=g-import-not-at-top

HERE = os.path.dirname(os.path.abspath(__file__))
METHOD_ORDER = ('dense', 'small_dense', 'pruning', 'granet', 'rigl', 'srigl',
                'topkast', 'snfs', 'set', 'static', 'imp', 'cs')
LABELS = {'dense': 'Dense', 'small_dense': 'Small-dense', 'static': 'Static',
          'set': 'SET', 'snfs': 'SNFS', 'rigl': 'RigL', 'pruning': 'Pruning',
          'srigl': 'SRigL', 'granet': 'GraNet', 'topkast': 'Top-KAST',
          'imp': 'IMP (ticket)', 'cs': 'CS (ticket)'}
COLORS = {'dense': 'black', 'small_dense': 'tab:gray', 'static': 'tab:blue',
          'set': 'tab:orange', 'snfs': 'tab:purple', 'rigl': 'tab:red',
          'pruning': 'tab:green', 'imp': 'tab:brown', 'cs': 'tab:olive',
          'srigl': 'tab:pink', 'granet': 'tab:cyan', 'topkast': 'gold'}
DIST_LABELS = {'uniform': 'Uniform', 'erk': 'ERK', '-': '-'}
# Per metric: the factor it is printed and plotted with, and its title.
SCALE = {'test_accuracy': 100.0, 'test_bits_per_char': 1.0}
TITLES = {'test_accuracy': 'test accuracy (%)',
          'test_bits_per_char': 'test bits per character (lower is better)'}
SMALL_DENSE_TOLERANCE = 0.02  # |matched - swept sparsity| to snap to it
ZOOM_BELOW_DENSE = 0.10  # accuracy plots show down to dense - 10 points
GROUP = ['method', 'distribution', 'sparsity', 'multiplier']  # over seeds
# The paper's comparisons, at each distribution and sparsity: pairs of
# (method, multiplier), and dense (1x or 2x) against a sparse method.
PAIRS = [('rigl', 1.0, 'set', 1.0), ('set', 1.0, 'static', 1.0),
         ('rigl', 1.0, 'static', 1.0), ('rigl', 1.0, 'snfs', 1.0),
         ('rigl', 1.0, 'pruning', 1.0), ('rigl', 2.0, 'pruning', 1.0),
         ('rigl', 2.0, 'rigl', 1.0), ('static', 2.0, 'static', 1.0)]
GAPS = [(1.0, 'rigl', 1.0), (1.0, 'rigl', 2.0), (1.0, 'static', 2.0),
        (2.0, 'rigl', 2.0), (2.0, 'static', 2.0)]


# ----------------------------------------------------------------- loading


def load_experiment(exp_dir: str) -> tuple[list[dict], list[dict]]:
  """Reads the runs of one experiment folder.

  Args:
    exp_dir: the experiment's folder, one subfolder per run.

  Returns:
    ``(runs, tickets)``: dicts with the run's ``name`` (its folder),
    ``results`` (results.json) and ``metrics`` (the metrics.jsonl rows);
    ticket searches (results with a ``curve``) are apart.
  """
  runs, tickets = [], []
  for root, _, files in sorted(os.walk(exp_dir)):
    if 'results.json' not in files:
      continue
    with open(os.path.join(root, 'results.json'), encoding='utf-8') as f:
      results = json.load(f)
    metrics, path = [], os.path.join(root, 'metrics.jsonl')
    if os.path.exists(path):
      with open(path, encoding='utf-8') as f:
        metrics = [json.loads(line) for line in f if line.strip()]
    run = {'name': os.path.relpath(root, exp_dir), 'results': results,
           'metrics': metrics}
    (tickets if 'curve' in results else runs).append(run)
  return runs, tickets


def metric_of(runs: list[dict]) -> str:
  """Returns ``'test_accuracy'`` or ``'test_bits_per_char'``."""
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


def describe(runs: list[dict], flops: FlopsCache) -> pd.DataFrame:
  """One row per run, with what the tables and plots need.

  Args:
    runs: as `load_experiment` returns them.
    flops: the FLOPs reports.

  Returns:
    ``name``, ``method`` (``small_dense``: dense, smaller than the largest
    model), ``distribution`` (``'-'``: dense), ``sparsity`` (small-dense:
    by parameter count, snapped to a swept one), ``multiplier``, ``seed``,
    ``value`` (the metric), ``training_flops`` and ``inference_flops`` (x
    the largest dense model's, 1x), ``measured_sparsity``, ``num_params``,
    ``steps``, ``wall_time_s``; raw ``layer_sparsity``, ``config``,
    ``metrics``.
  """
  metric = metric_of(runs)
  reports = [flops(run['results']['config']) for run in runs]
  dense_ref = max(rep['dense_inference_flops'] for rep in reports)
  full_params = max(r['results'].get('num_params', 0) for r in runs)
  swept = sorted({float(r['results']['config']['sparsity']['sparsity'])
                  for r in runs
                  if r['results']['config']['sparsity']['method'] != 'dense'})
  rows = []
  for run, rep in zip(runs, reports):
    res, cfg = run['results'], run['results']['config']
    method = trained = cfg['sparsity']['method']
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
    rows.append(dict(
        name=run['name'], method=method, distribution=dist,
        sparsity=round(sparsity, 6),
        multiplier=float(cfg.get('training_multiplier', 1.0)),
        seed=cfg.get('seed'), value=float(res[metric]),
        training_flops=rep['training_ratio'][trained] * scale,
        inference_flops=(scale if trained == 'dense'
                         else rep['inference_ratio'] * scale),
        measured_sparsity=float(res.get('global_sparsity', 0.0)),
        num_params=res.get('num_params'), steps=res.get('steps'),
        wall_time_s=float(res.get('wall_time_s', 0)),
        layer_sparsity=res.get('layer_sparsity', {}), config=cfg,
        metrics=run['metrics']))
  return pd.DataFrame(rows)


# ----------------------------------------------------------------- tables


def _rank(methods: pd.Series) -> pd.Series:
  """Returns each method's position in `METHOD_ORDER` (others: 99)."""
  return methods.map({m: i for i, m in enumerate(METHOD_ORDER)}).fillna(99)


def _mean(values: pd.Series) -> float:
  """Returns the mean; NaN if a value is (a diverged run shows)."""
  return values.mean(skipna=False)


def _std(values: pd.Series) -> float:
  """Returns the sample std (0 for one value)."""
  return values.std(skipna=False) if len(values) > 1 else 0.0


def summarize(runs: pd.DataFrame) -> pd.DataFrame:
  """Mean ± std over seeds of each group of runs.

  Args:
    runs: `describe`'s frame.

  Returns:
    One row per (method, distribution, sparsity, multiplier): ``n``,
    ``seeds``, ``mean`` and ``std`` of the metric, the means of the
    measured sparsity, FLOPs and wall time, the first run's ``num_params``
    and ``steps``; dense first, then by distribution, method (as in
    `METHOD_ORDER`), multiplier and sparsity.
  """
  rows = runs.groupby(GROUP, sort=False).agg(
      n=('value', 'size'),
      seeds=('seed', lambda s: ' '.join(sorted(s.astype(str)))),
      mean=('value', _mean), std=('value', _std),
      measured_sparsity=('measured_sparsity', _mean),
      training_flops=('training_flops', _mean),
      inference_flops=('inference_flops', _mean),
      num_params=('num_params', 'first'), steps=('steps', 'first'),
      wall_time_s=('wall_time_s', _mean)).reset_index()
  order = rows.assign(sparse=rows['distribution'] != '-',
                      rank=_rank(rows['method'])).sort_values(
                          ['sparse', 'distribution', 'rank', 'multiplier',
                           'sparsity'], kind='stable').index
  return rows.loc[order].reset_index(drop=True)


def _label(method: str, mult: float) -> str:
  label = LABELS.get(method, method)
  return label if mult == 1.0 else f'{label} {mult:g}x'


def _fmt_value(metric: str, mean: float, std: Optional[float] = None) -> str:
  """Returns e.g. ``'88.01 ± 0.05'`` (accuracy, %) or ``'3.163 ± 0.004'``."""
  k, digits = SCALE[metric], 2 if metric == 'test_accuracy' else 3
  s = f'{k * mean:.{digits}f}'
  return s if std is None else f'{s} ± {k * std:.{digits}f}'


def _percent(sparsity: pd.Series) -> pd.Series:
  return (100 * sparsity).map('{:g}%'.format)


def write_csv(rows: pd.DataFrame, metric: str, path: str) -> None:
  """Writes `summarize`'s ``rows`` to the CSV file ``path``."""
  table = rows.rename(columns={'multiplier': 'training_multiplier',
                               'mean': f'{metric}_mean',
                               'std': f'{metric}_std'})
  six = [f'{metric}_mean', f'{metric}_std', 'measured_sparsity',
         'training_flops', 'inference_flops']  # printed with 6 decimals
  table[six] = table[six].apply(lambda c: c.map('{:.6f}'.format))
  table['wall_time_s'] = table['wall_time_s'].map('{:.1f}'.format)
  table = table[['method', 'distribution', 'sparsity', 'training_multiplier',
                 'n', 'seeds', *six, 'num_params', 'steps', 'wall_time_s']]
  table.to_csv(path, index=False, lineterminator='\r\n', encoding='utf-8')


def _markdown(table: pd.DataFrame) -> list[str]:
  """Returns ``table``'s Markdown lines: cells as they are, ``|---|`` rule."""
  lines = table.to_markdown(index=False, stralign=None,
                            disable_numparse=True).split('\n')
  return [lines[0], '|' + '---|' * table.shape[1]] + lines[2:]


def pivot(rows: pd.DataFrame, metric: str, distribution: str) -> list[str]:
  """Methods (rows) x sparsities (columns) for one distribution.

  Args:
    rows: `summarize`'s frame.
    metric: the metric.
    distribution: ``'erk'`` or ``'uniform'``.

  Returns:
    The Markdown table's lines, dense (in every column) and small-dense
    included; none if no run has the distribution.
  """
  sparse = rows[rows['distribution'] == distribution]
  if sparse.empty:
    return []
  sparsities = sorted(sparse['sparsity'].unique())
  dense = rows[rows['method'] == 'dense'].drop(columns='sparsity').merge(
      pd.DataFrame({'sparsity': sparsities}), how='cross')
  cells = pd.concat([dense, rows[rows['method'] == 'small_dense'], sparse],
                    ignore_index=True)
  cells['cell'] = [_fmt_value(metric, m, s)
                   for m, s in zip(cells['mean'], cells['std'])]
  cells['label'] = [f'{_label(m, x)} (0%)' if m == 'dense' else
                    LABELS[m] if m == 'small_dense' else _label(m, x)
                    for m, x in zip(cells['method'], cells['multiplier'])]
  cells = cells.iloc[np.lexsort((cells['multiplier'],
                                 _rank(cells['method'])))]
  table = cells.pivot_table(index='label', columns='sparsity', values='cell',
                            aggfunc='last', sort=False)
  table = table.reindex(columns=sparsities).fillna('')
  table.columns = _percent(pd.Series(sparsities))
  return _markdown(table.rename_axis('method').reset_index())


def comparisons(runs: pd.DataFrame, metric: str) -> pd.DataFrame:
  """The paper's comparisons as per-seed differences.

  Same seed: same initial weights and data order. Positive: the first is
  better (for bits per character the sign is flipped).

  Args:
    runs: `describe`'s frame.
    metric: the metric.

  Returns:
    One row per comparison the runs allow: ``comparison``,
    ``distribution``, ``sparsity``, and the ``mean``, ``std`` and ``n``
    over the seeds both sides have of the difference.
  """
  sign = 1.0 if metric == 'test_accuracy' else -1.0
  by_seed = runs.sort_values('seed', key=lambda s: s.astype(str),
                             kind='stable').drop_duplicates(
                                 [*GROUP, 'seed'], keep='last')
  per_seed = {(m, x, d, s): g.set_index('seed')['value']
              for (m, d, s, x), g in by_seed.groupby(GROUP, sort=False)}
  dists = sorted(set(runs['distribution']) - {'-'})
  sparsities = sorted(runs.loc[runs['distribution'] != '-',
                               'sparsity'].unique())
  specs = []  # (comparison, distribution, sparsity, first, second)
  for dist in dists:
    for s in sparsities:
      specs += [(f'{_label(m1, x1)} - {_label(m2, x2)}', dist, s,
                 (m1, x1, dist, s), (m2, x2, dist, s))
                for m1, x1, m2, x2 in PAIRS]
      specs += [(f'{_label("dense", ref)} - {_label(m, x)} (gap)', dist, s,
                 ('dense', ref, '-', 0.0), (m, x, dist, s))
                for ref, m, x in GAPS]
  if 'erk' in dists and 'uniform' in dists:
    erk = runs.loc[runs['distribution'] == 'erk', 'method'].drop_duplicates()
    for method in erk.iloc[np.argsort(_rank(erk), kind='stable')]:
      specs += [(f'{_label(method, 1.0)}: ERK - uniform', 'erk vs uniform', s,
                 (method, 1.0, 'erk', s), (method, 1.0, 'uniform', s))
                for s in sparsities]
  specs += [('RigL - Small-dense', dist, s, ('rigl', 1.0, dist, s),
             ('small_dense', 1.0, '-', s)) for dist in dists
            for s in sparsities]
  out = []
  for comparison, dist, s, first, second in specs:
    if first not in per_seed or second not in per_seed:
      continue
    a, b = per_seed[first], per_seed[second]
    seeds = a.index.intersection(b.index, sort=False)
    if not seeds.empty:
      diff = a.loc[seeds] - b.loc[seeds]
      out.append((comparison, dist, s, sign * _mean(diff), _std(diff),
                  len(diff)))
  return pd.DataFrame(out, columns=['comparison', 'distribution', 'sparsity',
                                    'mean', 'std', 'n'])


def write_markdown(name: str, runs: pd.DataFrame, rows: pd.DataFrame,
                   metric: str, tickets: list[dict], path: str) -> None:
  """Writes the Markdown report: pivots, comparisons, groups, tickets.

  Args:
    name: the experiment.
    runs: `describe`'s frame.
    rows: `summarize`'s frame.
    metric: the metric.
    tickets: the ticket searches, as `load_experiment` returns them.
    path: the Markdown file.
  """
  k, title = SCALE[metric], TITLES[metric]
  unit = 'points' if metric == 'test_accuracy' else 'bits/char'
  better = ('higher accuracy' if metric == 'test_accuracy'
            else 'fewer bits/char')
  seeds = sorted(runs['seed'].astype(str).unique())
  lines = [f'# {name}: {title}', '',
           f'{len(runs)} runs, seeds {", ".join(seeds)}; mean ± std over '
           'seeds (sample std). Generated by `experiments/make_report.py` '
           'from `experiments/results/' + name + '/`; do not edit.', '']
  for dist in ('erk', 'uniform'):
    table = pivot(rows, metric, dist)
    if table:
      lines += [f'## {DIST_LABELS[dist]}', ''] + table + ['']

  diffs = comparisons(runs, metric)
  lines += ['## Comparisons (per-seed differences)', '',
            f'Positive: the first is better ({better}), in {unit}; '
            'mean ± std over the seeds both have.', '']
  lines += _markdown(pd.DataFrame({
      'comparison': diffs['comparison'],
      'distribution': diffs['distribution'],
      'sparsity': _percent(diffs['sparsity']),
      'difference': [f'{k * m:+.2f} ± {k * s:.2f}'
                     for m, s in zip(diffs['mean'], diffs['std'])],
      'seeds': diffs['n'].astype(str)}))

  lines += ['', '## All groups', '']
  measured = (100 * rows['measured_sparsity']).map('{:.2f}%'.format)
  f3 = '{:.3f}'.format
  lines += _markdown(pd.DataFrame({
      'method': rows['method'].map(lambda m: LABELS.get(m, m)),
      'distribution': rows['distribution'].map(
          lambda d: DIST_LABELS.get(d, d)),
      'sparsity (target / measured)': _percent(rows['sparsity']) + np.where(
          rows['method'] == 'small_dense', ' (by parameter count) / dense',
          ' / ' + measured),
      'training': rows['multiplier'].map('{:g}x'.format),
      'n': rows['n'].astype(str),
      title: [_fmt_value(metric, m, s)
              for m, s in zip(rows['mean'], rows['std'])],
      'training FLOPs (x dense 1x)': rows['training_flops'].map(f3),
      'inference FLOPs (x dense)': rows['inference_flops'].map(f3),
      'params': rows['num_params'].map(str),
      'steps': rows['steps'].map(str),
      'wall time (s)': rows['wall_time_s'].map('{:.0f}'.format)}))

  if tickets:
    lines += ['', '## Ticket searches', '',
              'One search each (seed 0), from `experiments/results/' + name +
              '/tickets_*`. Training FLOPs: every training the ticket took '
              '(IMP: all rounds so far; CS: its search rounds and the '
              'retraining), relative to dense 1x.', '']
  for t in tickets:
    kind = t['results'].get('config', {}).get('ticket_search', 'ticket')
    points = ticket_points(t)
    lines += [f"`{t['name']}` ({LABELS.get(kind, kind)}):", '']
    lines += _markdown(pd.DataFrame({
        'sparsity': (100 * points['sparsity']).map('{:.1f}%'.format),
        title: points['test_accuracy'].map(lambda v: _fmt_value(metric, v)),
        'training FLOPs (x dense 1x)': points['training_flops'].map(
            lambda f: '' if pd.isna(f) else f'{f:.2f}')})) + ['']
  with open(path, 'w', encoding='utf-8') as f:
    f.write('\n'.join(lines) + '\n')


def _ticket_flops_fn(config: dict) -> Optional[Callable[[dict], float]]:
  """Returns ``layer_sparsity -> inference FLOPs / dense`` for a ticket
  search's model, or None if its config does not describe one."""
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


def ticket_points(ticket: dict) -> pd.DataFrame:
  """The tickets a search found, with what their training cost.

  IMP (``curve``, one row per round): round n costs the training of rounds
  0..n, each at its mask's FLOPs (rounds after the first from the rewind
  step on). CS (``tickets``, one per lambda): ``cs.rounds`` searches with
  the dense network under a soft mask, then the ticket's training.

  Args:
    ticket: a ticket search, as `load_experiment` returns it.

  Returns:
    By sparsity: ``sparsity``, ``test_accuracy`` and ``training_flops``
    (relative to dense 1x training, counted as `rigl_jax.analysis.flops`
    counts static sparse training; None if the config names no model).
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
      points.append((c['sparsity'], c['test_accuracy'], flops))
  else:  # IMP
    for i, c in enumerate(res.get('curve', [])):
      if ratio is None or 'layer_sparsity' not in c:
        spent = None
      elif spent is not None:
        spent += (1.0 if i == 0 else retrain) * ratio(c['layer_sparsity'])
      points.append((c['sparsity'], c['test_accuracy'], spent))
  points = pd.DataFrame(points, columns=['sparsity', 'test_accuracy',
                                         'training_flops'])
  return points.astype({'sparsity': float, 'test_accuracy': float}
                       ).sort_values('sparsity', kind='stable')


# ----------------------------------------------------------------- plots


def _x_of(sparsity):
  """Plot position: -log10(density), so 80/90/95/98% spread evenly-ish."""
  return -np.log10(np.maximum(1.0 - sparsity, 1e-6))


def _save(fig, path: str) -> None:
  fig.tight_layout()
  fig.savefig(path, dpi=110, bbox_inches='tight')
  plt.close(fig)


def _errorbars(ax, rows: pd.DataFrame, metric: str, x: str, capsize: float,
               label_points: bool = False) -> None:
  """Draws one error-bar line per (method, multiplier) along column ``x``,
  in `METHOD_ORDER`; ``label_points``: sparse points get their sparsity."""
  k = SCALE[metric]
  rows = rows.iloc[np.lexsort((rows['multiplier'], _rank(rows['method'])))]
  for (method, mult), g in rows.groupby(['method', 'multiplier'], sort=False):
    g = g.sort_values(x, kind='stable')
    ax.errorbar(g[x].to_numpy(), k * g['mean'].to_numpy(),
                yerr=k * g['std'].to_numpy(), capsize=capsize,
                marker='o' if mult == 1.0 else 's', ms=4,
                ls='-' if mult == 1.0 else '--', color=COLORS.get(method),
                label=_label(method, mult))
    if label_points and method != 'dense':
      for r in g.itertuples():
        ax.annotate(f'{100 * r.sparsity:g}', (getattr(r, x), k * r.mean),
                    fontsize=6, xytext=(2, 2), textcoords='offset points',
                    color=COLORS.get(method))


def _ticket_lines(ax, tickets: list[dict], rows: pd.DataFrame, metric: str,
                  x: str, label_points: bool = False) -> None:
  """Draws each ticket search along ``x`` (``'x'``: `_x_of` sparsity, or
  ``'training_flops'``), from 5% under the lowest swept sparsity on."""
  swept = rows.loc[rows['distribution'] != '-', 'sparsity']
  if swept.empty:
    return
  k = SCALE[metric]
  for t in tickets:
    pts = ticket_points(t).assign(x=lambda p: _x_of(p['sparsity']))
    pts = pts[(pts['sparsity'] >= swept.min() - 0.05) & pts[x].notna()]
    if pts.empty:
      continue
    kind = t['results']['config'].get('ticket_search', 'ticket')
    ax.plot(pts[x].to_numpy(dtype=float), k * pts['test_accuracy'],
            ls=':', marker='x', color=COLORS.get(kind),
            label=f'{LABELS.get(kind, kind)}, 1 seed')
    if label_points:
      for p in pts.itertuples():
        ax.annotate(f'{100 * p.sparsity:.0f}',
                    (getattr(p, x), k * p.test_accuracy), fontsize=6,
                    xytext=(2, -7), textcoords='offset points',
                    color=COLORS.get(kind))


def _panels(rows: pd.DataFrame) -> tuple[Any, list[tuple[Any, str]]]:
  """Returns ``(figure, [(axes, distribution)])``, one panel each."""
  dists = [d for d in ('uniform', 'erk')
           if (rows['distribution'] == d).any()] or ['-']
  fig, axes = plt.subplots(1, len(dists), figsize=(6.2 * len(dists), 4.6),
                           sharey=True, squeeze=False)
  return fig, list(zip(axes[0], dists))


def _finish_panels(fig, panels, name: str, rows: pd.DataFrame, metric: str,
                   x: str, path: str) -> None:
  """Titles the panels, fits the y range to the methods but small-dense
  (whose tiniest models fall far below; accuracy at most `ZOOM_BELOW_DENSE`
  under dense), notes the points left outside, adds the legend, saves."""
  k = SCALE[metric]
  main = rows[rows['method'] != 'small_dense']
  lo = (k * (main['mean'] - main['std'])).min()
  hi = (k * (main['mean'] + main['std'])).max()
  dense = rows.loc[rows['method'] == 'dense', 'mean']
  if metric == 'test_accuracy' and not dense.empty:
    lo = max(lo, k * (dense.max() - ZOOM_BELOW_DENSE))
  pad = 0.06 * (hi - lo) + (0.3 if metric == 'test_accuracy' else 0.02)
  lo, hi = lo - pad, hi + pad
  outside = rows[~(k * rows['mean']).between(lo, hi)]
  for ax, dist in panels:
    ax.set_title(f'{name}: {DIST_LABELS[dist]}' if dist != '-' else name)
    ax.set_ylim(lo, hi)
    stacked = {True: 0, False: 0}  # a panel's notes go above each other
    for r in outside[outside['distribution'].isin([dist, '-'])].itertuples():
      below = k * r.mean < lo
      nth, stacked[below] = stacked[below], stacked[below] + 1
      color = COLORS.get(r.method, 'black')
      dist_label = (f' {DIST_LABELS[r.distribution]}'
                    if r.distribution != '-' else '')
      ax.annotate(
          f'{_label(r.method, r.multiplier)}{dist_label} '
          f'{100 * r.sparsity:g}%:\n{_fmt_value(metric, r.mean, r.std)}',
          (getattr(r, x), lo if below else hi),
          xytext=(0, (14 + 24 * nth) * (1 if below else -1)),
          textcoords='offset points', ha='center', fontsize=6.5,
          color=color, va='bottom' if below else 'top',
          arrowprops={'arrowstyle': '->', 'color': color})
  panels[0][0].set_ylabel(TITLES[metric])
  panels[-1][0].legend(fontsize=7, bbox_to_anchor=(1.01, 1.0),
                       loc='upper left')
  _save(fig, path)


def plot_vs_sparsity(name: str, rows: pd.DataFrame, metric: str,
                     tickets: list[dict], path: str) -> None:
  """Draws the metric against sparsity, one panel per distribution.

  Dense: horizontal lines with ± std bands; small-dense: in every panel.

  Args:
    name: the experiment.
    rows: `summarize`'s frame.
    metric: the metric.
    tickets: ticket searches, drawn as dotted lines.
    path: the PNG file.
  """
  k = SCALE[metric]
  rows = rows.assign(x=_x_of(rows['sparsity']))
  sparsities = np.sort(rows.loc[rows['distribution'] != '-',
                                'sparsity'].unique())
  fig, panels = _panels(rows)
  for ax, dist in panels:
    for d in rows[rows['method'] == 'dense'].itertuples():
      one = d.multiplier == 1.0
      ax.axhline(k * d.mean, color='black', lw=1.2, ls='-' if one else '--',
                 label=f"{_label('dense', d.multiplier)} "
                 f'({_fmt_value(metric, d.mean, d.std)})')
      ax.axhspan(k * (d.mean - d.std), k * (d.mean + d.std), color='black',
                 alpha=0.08 if one else 0.04)
    _errorbars(ax, rows[(rows['distribution'] == dist)
                        | (rows['method'] == 'small_dense')], metric, 'x', 3)
    _ticket_lines(ax, tickets, rows, metric, 'x')
    ax.set_xticks(_x_of(sparsities), [f'{100 * s:g}%' for s in sparsities])
    ax.set_xlabel('sparsity')
    ax.grid(alpha=0.3)
  _finish_panels(fig, panels, name, rows, metric, 'x', path)


def plot_vs_flops(name: str, rows: pd.DataFrame, metric: str,
                  tickets: list[dict], path: str) -> None:
  """Draws the metric against training FLOPs (log), one panel per
  distribution, points labelled with their sparsity.

  Args:
    name: the experiment.
    rows: `summarize`'s frame.
    metric: the metric.
    tickets: ticket searches, drawn as dotted lines.
    path: the PNG file.
  """
  fig, panels = _panels(rows)
  for ax, dist in panels:
    _errorbars(ax, rows[rows['distribution'].isin([dist, '-'])], metric,
               'training_flops', 2, label_points=True)
    _ticket_lines(ax, tickets, rows, metric, 'training_flops',
                  label_points=True)
    ax.set_xscale('log')
    ax.set_xlabel('training FLOPs relative to dense 1x '
                  '(rigl_jax.analysis.flops; labels: sparsity %)')
    ax.grid(alpha=0.3, which='both')
  _finish_panels(fig, panels, name, rows, metric, 'training_flops', path)


def layer_sparsities(runs: pd.DataFrame,
                     flops: Optional[FlopsCache] = None) -> pd.DataFrame:
  """Per-layer sparsity of ERK and uniform at every swept sparsity.

  From `rigl_jax.sparsity_distribution` (via `model_flops.report`), trained
  or not, on the experiment's full-size model (a sparse run's config with
  the distribution and sparsity set).

  Args:
    runs: `describe`'s frame.
    flops: the FLOPs reports.

  Returns:
    Sparse layers (those with a mask in some run or with zeros under some
    distribution; not biases) x ``(distribution, sparsity)``, by sparsity,
    uniform first (a distribution that cannot reach a sparsity left out).
  """
  sparse = runs[runs['distribution'] != '-']
  if sparse.empty:
    return pd.DataFrame()
  flops = flops or FlopsCache()
  table = {}
  for s in sorted(sparse['sparsity'].unique()):
    for dist in ('uniform', 'erk'):
      cfg = json.loads(json.dumps(sparse['config'].iloc[0]))
      cfg['sparsity'].update(distribution=dist, sparsity=s)
      try:
        table[(dist, s)] = flops(cfg)['layer_sparsity']
      except ValueError:  # e.g. ERK cannot reach s on this model
        continue
  layers = list(dict.fromkeys(layer for sp in table.values() for layer in sp))
  table = pd.DataFrame(table, index=layers).fillna(0.0)
  masked = {layer for sp in sparse['layer_sparsity'] for layer in sp}
  return table[table.index.isin(masked) | (table > 0.0).any(axis=1)]


def layer_shapes(runs: pd.DataFrame) -> dict[str, str]:
  """Returns ``{layer: 'AxB'}`` of the full-size model's kernels."""
  import jax  # pylint: disable=g-import-not-at-top
  from rigl_jax import paths  # pylint: disable=g-import-not-at-top
  sparse = runs[runs['distribution'] != '-']
  if sparse.empty:
    return {}
  config = ml_collections.ConfigDict(sparse['config'].iloc[0])
  # The model and input exactly as flops.report builds them.
  build = model_flops.model_and_input
  model, shape, dtype, kwargs, _ = build(config)
  x = jax.ShapeDtypeStruct((1, *shape), dtype)
  params = jax.eval_shape(
      lambda x: model.init(jax.random.PRNGKey(0), x, **kwargs), x)['params']
  flat, _ = jax.tree_util.tree_flatten_with_path(params)
  return {paths.path_str(p): 'x'.join(str(d) for d in leaf.shape)
          for p, leaf in flat}


def plot_layer_sparsity(name: str, runs: pd.DataFrame, path: str,
                        flops: Optional[FlopsCache] = None) -> None:
  """Draws each sparse layer's sparsity under ERK and uniform.

  Bars: ERK (solid) and uniform (hatched) at every swept sparsity; dots:
  measured in the final masks of the runs (mean over runs; pruning
  included, dense runs not); a distribution no run trained is marked so in
  the legend.

  Args:
    name: the experiment.
    runs: `describe`'s frame.
    path: the PNG file.
    flops: the FLOPs reports.
  """
  table = layer_sparsities(runs, flops)
  layers, trained = list(table.index), set(runs['distribution'])
  measured = pd.DataFrame(
      [(r.distribution, r.sparsity, layer, v)
       for r in runs[runs['distribution'] != '-'].itertuples()
       for layer, v in r.layer_sparsity.items()],
      columns=['distribution', 'sparsity', 'layer', 'value']).groupby(
          ['distribution', 'sparsity', 'layer'])['value'].mean()
  sparsities = sorted({s for _, s in table.columns})
  colors = {s: plt.get_cmap('viridis')(0.85 * i / max(1, len(sparsities) - 1))
            for i, s in enumerate(sparsities)}
  width = 0.8 / max(1, table.shape[1])
  fig, ax = plt.subplots(figsize=(max(7.0, 2.4 * len(layers) + 2), 4.6))
  for j, (d, s) in enumerate(table.columns):
    xs = np.arange(len(layers)) - 0.4 + width * (j + 0.5)
    ax.bar(xs, 100 * table[(d, s)].to_numpy(), width=width * 0.95,
           color=colors[s] if d == 'erk' else 'white', edgecolor=colors[s],
           hatch='///' if d == 'uniform' else None,
           label=f'{DIST_LABELS[d]} {100 * s:g}%'
           + ('' if d in trained else ' (not trained)'))
    got = measured.reindex(pd.MultiIndex.from_product([[d], [s], layers]))
    if got.notna().any():
      ax.plot(xs[got.notna()], 100 * got.dropna().to_numpy(), ls='none',
              marker='o', ms=3, color='red',
              label='measured (final masks)' if j == 0 else None)
  shapes = layer_shapes(runs)
  ax.set_xticks(range(len(layers)),
                [f'{layer}\n{shapes.get(layer, "")}' for layer in layers],
                fontsize=8)
  ax.set_ylabel('layer sparsity (%)')
  ax.set_ylim(0, 105)
  ax.set_title(f'{name}: per-layer sparsity, ERK (filled) vs uniform '
               '(hatched)')
  ax.grid(alpha=0.3, axis='y')
  ax.legend(fontsize=7, bbox_to_anchor=(1.01, 1.0), loc='upper left')
  _save(fig, path)


def _logged(runs: pd.DataFrame, column: str) -> pd.DataFrame:
  """Returns ``step`` and ``column`` of the runs' metrics rows that have it."""
  return pd.DataFrame([(row['step'], row[column])
                       for metrics in runs['metrics'] for row in metrics
                       if column in row], columns=['step', column])


def plot_mask_churn(name: str, runs: pd.DataFrame, path: str) -> bool:
  """Draws RigL's and SET's mask churn over training, a panel per sparsity.

  Args:
    name: the experiment.
    runs: `describe`'s frame.
    path: the PNG file.

  Returns:
    False (and no plot) if no RigL or SET run (1x) logged metrics.
  """
  churn = runs[runs['method'].isin(['rigl', 'set'])
               & (runs['multiplier'] == 1.0) & (runs['metrics'].map(len) > 0)]
  if churn.empty:
    return False
  sparsities = sorted(churn['sparsity'].unique())
  fig, axes = plt.subplots(1, len(sparsities),
                           figsize=(4.0 * len(sparsities), 3.6),
                           sharey=True, squeeze=False)
  for ax, s in zip(axes[0], sparsities):
    at = churn[churn['sparsity'] == s]
    for method in ('rigl', 'set'):
      for dist, ls in (('erk', '-'), ('uniform', '--')):
        rs = at[(at['method'] == method) & (at['distribution'] == dist)]
        if rs.empty:
          continue
        stats = 100 * _logged(rs, 'train_mask_churn').groupby('step')[
            'train_mask_churn'].agg(mean=_mean, std=_std)
        ax.plot(stats.index, stats['mean'], ls=ls, color=COLORS[method],
                label=f'{LABELS[method]} {DIST_LABELS[dist]}')
        ax.fill_between(stats.index, stats['mean'] - stats['std'],
                        stats['mean'] + stats['std'], color=COLORS[method],
                        alpha=0.12, lw=0)
    drop = _logged(at.iloc[:1], 'train_drop_fraction')
    if not drop.empty:
      ax.plot(drop['step'], 100 * drop['train_drop_fraction'], color='black',
              lw=0.8, ls=':', label='drop fraction (schedule)')
    ax.set_title(f'{100 * s:g}% sparsity')
    ax.set_xlabel('step')
    ax.grid(alpha=0.3)
  axes[0][0].set_ylabel('mask churn of the last update\n'
                        '(% of active connections changed)')
  axes[0][-1].legend(fontsize=7)
  fig.suptitle(f'{name}: connections changed per mask update, RigL vs SET '
               '(mean over seeds)', fontsize=10)
  _save(fig, path)
  return True


# ----------------------------------------------------------------- main


def report_experiment(exp_dir: str, out: str,
                      flops: Optional[FlopsCache] = None) -> list[str]:
  """Writes the tables and plots of one experiment.

  Args:
    exp_dir: the experiment's results folder.
    out: where the files go.
    flops: the FLOPs reports (shared between experiments).

  Returns:
    The paths written; none if the folder has no runs.
  """
  name = os.path.basename(os.path.normpath(exp_dir))
  raw, tickets = load_experiment(exp_dir)
  if not raw:
    return []
  flops = flops or FlopsCache()
  metric, runs = metric_of(raw), describe(raw, flops)
  rows = summarize(runs)
  paths = [os.path.join(out, f'{name}{suffix}') for suffix in
           ('.csv', '.md', '_vs_sparsity.png', '_vs_flops.png',
            '_layer_sparsity.png', '_mask_churn.png')]
  write_csv(rows, metric, paths[0])
  write_markdown(name, runs, rows, metric, tickets, paths[1])
  plot_vs_sparsity(name, rows, metric, tickets, paths[2])
  plot_vs_flops(name, rows, metric, tickets, paths[3])
  if not plot_mask_churn(name, runs, paths[5]):
    paths.pop()
  if (runs['distribution'] != '-').any():
    plot_layer_sparsity(name, runs, paths[4], flops)
  else:
    paths.pop(4)
  return paths


def main(argv: Optional[list[str]] = None) -> int:
  """Reports every experiment under ``--results`` into ``--out``.

  Args:
    argv: the command line arguments (default: ``sys.argv[1:]``).

  Returns:
    The exit status: 0; 1 if no results were found; 2 if the results
    folder does not exist.
  """
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
