"""The evidence sweeps (configs/evidence_*.py) and their in-process driver."""

import json
import os

import pytest

from configs import evidence_fashion_mnist
from experiments import run_evidence
from experiments import sweep
from tests import helpers

REPO = helpers.REPO


def _config(name):
  return os.path.join(REPO, 'configs', name)


def test_fashion_mnist_sweep_sizes_and_order():
  path = _config('evidence_fashion_mnist.py')
  grid = sweep.expand(sweep.load_sweep(path, 'grid'))
  # Per seed: dense, 4 small-dense, 5 methods x 2 distributions x 4 levels.
  assert len(grid) == 3 * (1 + 4 + 5 * 2 * 4)
  assert [r['seed'] for r in grid] == sorted(r['seed'] for r in grid)
  long = sweep.expand(sweep.load_sweep(path, 'long_erk'))
  assert len(long) == 3 * (1 + 2 * 4)  # dense, RigL and Static at 2x
  assert {r['training_multiplier'] for r in long} == {2.0}
  since = sweep.expand(sweep.load_sweep(path, 'since_rigl'))
  # SRigL, GraNet, Top-KAST at 90/95/98% ERK, seed by seed.
  assert len(since) == 3 * 3 * 3
  assert {r['sparsity.method'] for r in since} == {'srigl', 'granet',
                                                   'topkast'}
  assert [r['seed'] for r in since] == sorted(r['seed'] for r in since)
  everything = sweep.expand(sweep.load_sweep(path))
  assert len(everything) == len(grid) + 2 * len(long) - 3 + len(since)
  assert len({sweep.run_name(r) for r in everything}) == len(everything)


def test_transformer_sweep_sizes_and_layout_pair():
  path = _config('evidence_transformer.py')
  runs = sweep.expand(sweep.load_sweep(path))
  # Per seed: dense, 4 methods x 2 distributions x 2 levels, RigL 2x x 2.
  assert len(runs) == 3 * (1 + 4 * 2 * 2 + 2)
  assert [r['seed'] for r in runs] == sorted(r['seed'] for r in runs)
  assert len({sweep.run_name(r) for r in runs}) == len(runs)
  pair = sweep.expand(sweep.load_sweep(path, 'layout'))
  assert [r['model.kwargs.scan_layers'] for r in pair] == [True, False]
  with pytest.raises(ValueError, match='layout'):
    sweep.load_sweep(path, 'seed9')


@pytest.mark.parametrize('sparsity', evidence_fashion_mnist.SPARSITIES)
def test_small_dense_matches_the_sparse_nonzeros(sparsity):
  full = evidence_fashion_mnist.kernel_weights((300, 100))
  assert full == 784 * 300 + 300 * 100 + 100 * 10
  small = evidence_fashion_mnist.kernel_weights(
      evidence_fashion_mnist.small_dense_widths(sparsity))
  assert small == pytest.approx((1 - sparsity) * full, rel=0.04)


def test_shakespeare_sweep():
  runs = sweep.expand(sweep.load_sweep(_config('evidence_shakespeare.py'),
                                       'seed0'))
  assert len(runs) == 1 + 4 * 2
  assert {r['sparsity.method'] for r in runs} == {
      'dense', 'static', 'set', 'rigl', 'pruning'}


def test_overrides_are_typed_like_main_py_flags():
  config = run_evidence.load_config(_config('evidence_fashion_mnist.py'))
  run_evidence.apply_overrides(config, {
      'model.kwargs.hidden_sizes': (33, 11), 'training_multiplier': 2,
      'seed': '1', 'sparsity.method': 'set', 'sparsity.sparsity': '0.95'})
  assert config.model.kwargs.hidden_sizes == (33, 11)
  assert config.training_multiplier == 2.0
  assert isinstance(config.training_multiplier, float)
  assert config.seed == 1 and config.sparsity.method == 'set'
  assert config.sparsity.sparsity == 0.95
  # The masks follow the run's seed (paper.sparsity_config pins them to 0).
  assert config.sparsity.seed is None


def test_finished_needs_a_complete_ticket_search(tmp_path):
  assert not run_evidence.finished(str(tmp_path))
  (tmp_path / 'results.json').write_text(json.dumps({'test_accuracy': 0.5}))
  assert run_evidence.finished(str(tmp_path))
  (tmp_path / 'results.json').write_text(json.dumps({'complete': False}))
  assert not run_evidence.finished(str(tmp_path))
