"""The benchmark scripts run end to end (tiny sizes) and print every figure."""

import json
import os
import re
import subprocess
import sys

import pytest
from tests import helpers

ROOT = helpers.REPO
ALL_METHODS = ('static', 'set', 'snfs', 'rigl', 'pruning')


def _run(*args: str) -> str:
  env = dict(os.environ, PYTHONPATH=ROOT)
  out = subprocess.run([sys.executable, *args], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=600,
                       check=False)
  assert out.returncode == 0, out.stderr[-3000:]
  return out.stdout


# RigL in the default suite (every method prints through the same code);
# all five under -m slow.
@pytest.mark.parametrize('methods', [
    ('rigl',),
    pytest.param(ALL_METHODS, marks=pytest.mark.slow)])
def test_sparse_step_prints_a_ratio_per_method(methods):
  out = _run('benchmarks/sparse_step.py', '--width', '32', '--batch', '8',
             '--rounds', '2', '--repeats', '2', '--skip_resnet',
             '--methods', ','.join(methods))
  assert re.search(r'dense step\s+[\d.]+ ms', out), out
  for method in methods:
    row = re.search(rf'^{method}\s+([\d.]+) ms\s+([\d.]+) ms\s+([\d.]+) ms\s+'
                    r'([\d.]+)x \[([\d.]+), ([\d.]+)\]', out, re.M)
    assert row, f'no row for {method}:\n{out}'
    plain, update, amortised, ratio, low, high = map(float, row.groups())
    assert plain > 0 and update > 0 and ratio > 0
    assert low <= ratio <= high
    # The amortised time is a weighted mean of the plain and update steps'
    # (per round; medians over rounds can move it a little).
    lo, hi = sorted((plain, update))
    assert 0.8 * lo <= amortised <= 1.2 * hi
    for label in ('as users', 'donated '):
      users = re.search(rf'^{label}  {method}\s+([\d.]+) ms\s+([\d.]+) ms\s+'
                        r'([\d.]+) ms\s+([\d.]+)x \[([\d.]+), ([\d.]+)\]  '
                        r'95% CI of the median ([\d.]+)-([\d.]+)$', out, re.M)
      assert users, f'no "{label}" row for {method}:\n{out}'
      ratio, low, high, ci_low, ci_high = map(float, users.groups()[3:])
      assert low <= ci_low <= ratio <= ci_high <= high
  assert len(re.findall(r'scratch \(XLA temp\) per call: .*rigl [\d.]+', out)
             ) == 2, out
  assert 'peak host memory' in out


def test_train_step_times_a_config_as_main_py_runs_it(tmp_path):
  out = _run('benchmarks/train_step.py', '--config', 'configs/default.py',
             '--batch', '8', '--rounds', '2', '--repeats', '1', '--cond',
             '--json', str(tmp_path / 'figures.json'))
  assert 'configs/default.py: mlp, rigl erk 90%, batch 8' in out, out
  for program in ('dense', 'plain', 'update', 'cond'):
    assert re.search(rf'^  {program}\s+[\d.]+ ms/step\s+\d+ images/s',
                     out, re.M), out
  assert re.search(r'rigl / dense: plain step [\d.]+x, amortised over 100 '
                   r'steps [\d.]+x; a mask update adds -?[\d.]+ ms; cond '
                   r'program [\d.]+x', out), out
  [figures] = json.loads((tmp_path / 'figures.json').read_text())
  assert figures['method'] == 'rigl' and figures['update_freq'] == 100
  assert set(figures['throughput']) == {'dense', 'plain', 'update', 'cond'}
  # examples/s is the batch over the step's time.
  for k, ms in figures['step_ms'].items():
    assert figures['throughput'][k] == pytest.approx(8 / ms * 1e3, rel=0.01)


def test_train_step_bad_config_is_one_line_before_any_timing(tmp_path):
  env = dict(os.environ, PYTHONPATH=ROOT)
  for args, want in [
      (['--config', str(tmp_path / 'missing.py')], 'not found'),
      (['--config', 'configs/default.py', '--config', 'configs/default.py',
        '--batch', '8'], 'give --batch once per --config (2)'),
      (['--config', 'configs/default.py', '--batch', '0'],
       'the batch size must be at least 1; got 0')]:
    out = subprocess.run([sys.executable, 'benchmarks/train_step.py', *args],
                         cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=300, check=False)
    assert out.returncode == 2, out.stderr
    assert want in out.stderr and 'Traceback' not in out.stderr, out.stderr
    assert 'ms/step' not in out.stdout


@pytest.mark.slow
def test_sparse_step_resnet20_and_mask_update_time():
  out = _run('benchmarks/sparse_step.py', '--model', 'resnet20', '--batch',
             '2', '--rounds', '1', '--repeats', '1')
  assert 'ResNet-20' in out
  assert re.search(r'masked_init on a ResNet-50-sized tree .*: [\d.]+ s', out)
  for method in ('rigl', 'set', 'snfs'):
    assert re.search(rf'{method} mask update on a ResNet-50-sized tree '
                     r'\(25\.5M weights, ERK 90%\): [\d.]+ s', out), out


@pytest.mark.slow
def test_sparse_inference_prints_interleaved_speed_ups():
  out = _run('benchmarks/sparse_inference.py', '--models', 'default',
             '--sparsities', '0.9', '--batch', '16', '--masks', 'srigl')
  rows = re.findall(r'^\| default MLP .*\| 90% \| (SRigL, \w+) \|.*'
                    r'\*\*([\d.]+)x\*\* \|.*\*\*([\d.]+)x\*\* \|$', out, re.M)
  assert [r[0] for r in rows] == ['SRigL, condensed', 'SRigL, CSR'], out
  assert all(float(b1) > 0 and float(bn) > 0 for _, b1, bn in rows)


@pytest.mark.slow
def test_compile_cache_prints_both_settings():
  out = _run('benchmarks/compile_cache.py', '--kernels', '3')
  for check in ('True', 'False'):
    assert re.search(rf'check_leaks={check}\s+first\s+[\d.]+ s\s+'
                     r'restarted\s+[\d.]+ s', out), out
