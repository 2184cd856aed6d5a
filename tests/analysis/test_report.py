"""experiments/make_report.py on a tiny synthetic results tree."""

import csv
import json
import math

import pytest

from configs import evidence_fashion_mnist
from configs import evidence_tickets
from experiments import make_report
from rigl_jax.analysis import model_flops

PNG = b'\x89PNG\r\n\x1a\n'


def _mlp_params(hidden):
  sizes = (784, *hidden, 10)
  return sum(a * b + b for a, b in zip(sizes, sizes[1:]))


def _write_run(root, name, *, method, dist='erk', sparsity=0.0, seed=0,
               acc, hidden=(300, 100), mult=1.0, churn=None):
  config = evidence_fashion_mnist.get_config()
  config.sparsity.method = method
  config.sparsity.distribution = dist
  config.sparsity.sparsity = sparsity
  config.model.kwargs.hidden_sizes = hidden
  config.training_multiplier = mult
  config.seed = seed
  layer = ({'dense0/kernel': sparsity, 'dense1/kernel': sparsity,
            'head/kernel': sparsity} if method != 'dense' else {})
  results = {'test_accuracy': acc, 'global_sparsity': sparsity,
             'layer_sparsity': layer, 'num_params': _mlp_params(hidden),
             'steps': int(1404 * mult), 'wall_time_s': 10.0,
             'config': config.to_dict()}
  run_dir = root / name
  run_dir.mkdir(parents=True)
  (run_dir / 'results.json').write_text(json.dumps(results))
  rows = []
  for i, step in enumerate((100, 200, 300)):
    row = {'step': step, 'train_loss': 1.0}
    if churn is not None:
      row['train_mask_churn'] = churn / (i + 1)
    rows.append(json.dumps(row))
  (run_dir / 'metrics.jsonl').write_text('\n'.join(rows) + '\n')
  return config


@pytest.fixture(name='tree')
def fixture_tree(tmp_path):
  exp = tmp_path / 'results' / 'fm'
  accs = {('rigl', 'erk', 1.0): (0.88, 0.86), ('set', 'erk', 1.0): (0.85, 0.85),
          ('static', 'erk', 1.0): (0.84, 0.82),
          ('rigl', 'uniform', 1.0): (0.87, 0.85),
          ('rigl', 'erk', 2.0): (0.89, 0.87)}
  configs = {}
  for seed in (0, 1):
    _write_run(exp, f'dense,seed={seed}', method='dense', seed=seed,
               acc=0.90 - 0.01 * seed)
    _write_run(exp, f'small,seed={seed}', method='dense', seed=seed,
               acc=0.80, hidden=evidence_fashion_mnist.small_dense_widths(0.9))
    for (method, dist, mult), values in accs.items():
      configs[(method, dist, mult)] = _write_run(
          exp, f'{method},{dist},{mult},seed={seed}', method=method,
          dist=dist, sparsity=0.9, seed=seed, acc=values[seed], mult=mult,
          churn=0.2 if method == 'rigl' else 0.3 if method == 'set' else None)
  imp = exp / 'tickets_imp'
  imp.mkdir()
  kernels = ('dense0/kernel', 'dense1/kernel', 'head/kernel')
  (imp / 'results.json').write_text(json.dumps({
      'test_accuracy': 0.88, 'global_sparsity': 0.9, 'steps': 2340,
      'rewind_step': 0, 'complete': True,
      'config': evidence_tickets.get_config('imp').to_dict(),
      'curve': [{'sparsity': 0.0, 'test_accuracy': 0.89,
                 'layer_sparsity': dict.fromkeys(kernels, 0.0)},
                {'sparsity': 0.9, 'test_accuracy': 0.88,
                 'layer_sparsity': dict.fromkeys(kernels, 0.9)}]}))
  return tmp_path, accs, configs


def test_report_tables_and_plots(tree):
  tmp_path, accs, configs = tree
  out = tmp_path / 'out'
  assert make_report.main(['--results', str(tmp_path / 'results'),
                           '--out', str(out)]) == 0
  for suffix in ('_vs_sparsity.png', '_vs_flops.png', '_layer_sparsity.png',
                 '_mask_churn.png'):
    data = (out / f'fm{suffix}').read_bytes()
    assert data.startswith(PNG) and len(data) > 5000, suffix

  with open(out / 'fm.csv') as f:
    rows = list(csv.DictReader(f))
  by_key = {(r['method'], r['distribution'], float(r['sparsity']),
             float(r['training_multiplier'])): r for r in rows}
  assert len(rows) == 2 + len(accs)
  for (method, dist, mult), values in accs.items():
    row = by_key[(method, dist, 0.9, mult)]
    assert int(row['n']) == 2
    assert float(row['test_accuracy_mean']) == pytest.approx(
        sum(values) / 2, abs=1e-6)
    assert float(row['test_accuracy_std']) == pytest.approx(
        abs(values[0] - values[1]) / math.sqrt(2), abs=1e-6)
    expected = model_flops.report(configs[(method, dist, mult)])
    assert float(row['training_flops']) == pytest.approx(
        expected['training_ratio'][method], rel=1e-5)
    assert float(row['inference_flops']) == pytest.approx(
        expected['inference_ratio'], rel=1e-5)
  dense = by_key[('dense', '-', 0.0, 1.0)]
  assert float(dense['test_accuracy_mean']) == pytest.approx(0.895)
  assert float(dense['training_flops']) == pytest.approx(1.0)
  # The small dense model is matched to 90% by its parameter count and
  # costs less than the dense one in proportion to its FLOPs.
  small = by_key[('small_dense', '-', 0.9, 1.0)]
  assert float(small['test_accuracy_mean']) == pytest.approx(0.80)
  assert 0.05 < float(small['training_flops']) < 0.15
  assert (by_key[('rigl', 'erk', 0.9, 2.0)]['training_flops']
          > by_key[('rigl', 'erk', 0.9, 1.0)]['training_flops'])

  md = (out / 'fm.md').read_text()
  # Per-seed differences: RigL - SET = (+0.03, +0.01) -> +2.00 points.
  assert '| RigL - SET | erk | 90% | +2.00 ± 1.41 | 2 |' in md
  assert ('| RigL: ERK - uniform | erk vs uniform | 90% | +1.00 ± 0.00 | 2 |'
          in md)
  assert '| RigL 2x | 88.00 ± 1.41 |' in md
  # IMP: round 1 cost round 0 (dense, 1.0) plus a 90%-sparse training.
  assert '| 0.0% | 89.00 | 1.00 |' in md
  assert '| 90.0% | 88.00 | 1.10 |' in md


def test_layer_sparsity_follows_the_distribution(tree):
  tmp_path, _, _ = tree
  runs, tickets = make_report.load_experiment(str(tmp_path / 'results' / 'fm'))
  assert len(tickets) == 1 and len(runs) == 14
  runs = make_report.describe(runs, make_report.FlopsCache())
  assert len(runs) == 14
  # Layers (rows) x (distribution, sparsity) (columns).
  dist = make_report.layer_sparsities(runs)
  layers = list(dist.index)
  assert layers == ['dense0/kernel', 'dense1/kernel', 'head/kernel']
  assert all(dist[('uniform', 0.9)][layer] == pytest.approx(0.9)
             for layer in layers)
  erk = dist[('erk', 0.9)]
  # ERK: the large first layer sparser than the small head.
  assert erk['dense0/kernel'] > erk['dense1/kernel'] > erk['head/kernel']


def test_missing_results_folder(tmp_path, capsys):
  assert make_report.main(['--results', str(tmp_path / 'nope'),
                           '--out', str(tmp_path)]) == 2
  assert 'error' in capsys.readouterr().err


def test_report_reads_what_a_real_run_writes(trained_run, tmp_path):
  """The report's view of a run equals what the training loop wrote."""
  exp = tmp_path / 'results' / 'tiny'
  trained_run.copy_to(exp / 'rigl,seed=0')
  runs, tickets = make_report.load_experiment(str(exp))
  assert len(runs) == 1 and not tickets
  rows = make_report.describe(runs, make_report.FlopsCache())
  row = rows.iloc[0]
  res = trained_run.results
  assert (row['method'], row['distribution']) == ('rigl', 'erk')
  assert row['value'] == res['test_accuracy']
  assert row['measured_sparsity'] == pytest.approx(0.9, abs=0.01)
  assert row['steps'] == 20
  # Sparse training costs less than dense: the FLOPs rules saw the run.
  assert 0 < row['training_flops'] < 1 and 0 < row['inference_flops'] < 1
  assert [m['step'] for m in row['metrics'] if 'train_loss' in m] == [
      5, 10, 15, 20]
