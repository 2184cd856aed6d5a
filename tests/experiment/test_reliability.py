"""Reliability: kills, SIGTERM, damaged and foreign checkpoints, NaNs."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

from absl import logging
import jax
import numpy as np
import pytest

import rigl_jax
from rigl_jax.experiment import builders
from rigl_jax.experiment import data as data_lib
from rigl_jax.experiment import train
from tests import helpers
from tests.runs import tiny_config

REPO = helpers.REPO

# A small run of the default experiment: 40 steps, RigL updates every 5
# steps, checkpoints every 10, logs every 5.
RUN_FLAGS = (
    '--config.num_train_steps=40', '--config.data.train_fraction=0.05',
    '--config.data.eval_batch_size=500',
    '--config.model.kwargs.hidden_sizes=(64, 32)',
    '--config.sparsity.update_freq=5', '--config.log_every_steps=5',
    '--config.checkpoint_every_steps=10',
)


def _run(workdir, *extra, fault=None, wait=True):
  env = dict(os.environ)
  env.pop('RIGL_JAX_FAULT', None)
  if fault:
    env['RIGL_JAX_FAULT'] = fault
  cmd = [sys.executable, os.path.join(REPO, 'main.py'), '--config',
         os.path.join(REPO, 'configs', 'default.py'), '--workdir',
         str(workdir), *RUN_FLAGS, *extra]
  if not wait:
    return subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
  return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True,
                        text=True, timeout=600)


def _metrics(workdir):
  rows = []
  with open(os.path.join(workdir, 'metrics.jsonl'), encoding='utf-8') as f:
    for line in f:
      row = json.loads(line)
      row.pop('steps_per_sec', None)  # wall-clock, not a result
      rows.append(row)
  return rows


def _final(workdir, config=None):
  config = config or tiny_config(steps=40)
  state, step = builders.restore_train_state(config, str(workdir))
  return jax.device_get(state), step


def _assert_same_state(a, b):
  la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
  assert len(la) == len(lb)
  for x, y in zip(la, lb):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_tiny_config_matches_run_flags():
  # The in-process helpers read the subprocess runs with this config.
  config = tiny_config(steps=40)
  assert config.model.kwargs.hidden_sizes == (64, 32)
  assert config.checkpoint_every_steps == 10


# The default suite kills once, mid-run, right after a mask update; the
# three kill points (during a checkpoint write, after a mask update, just
# after a checkpoint commit) run under -m slow.
@pytest.mark.parametrize('faults, resumed_from', [
    (('after_step@26',), 20),
    pytest.param(('during_save@20', 'after_step@26', 'after_save@30'), 30,
                 marks=pytest.mark.slow)])
def test_sigkill_at_several_points_resumes_bit_for_bit(tmp_path, faults,
                                                       resumed_from):
  # The uninterrupted run in this process (the config `RUN_FLAGS` gives,
  # `test_tiny_config_matches_run_flags`): one `main.py` start fewer.
  full = tmp_path / 'full'
  train.train_and_evaluate(tiny_config(steps=40), str(full))

  part = tmp_path / 'part'
  ckpt = part / 'checkpoints'
  for fault in faults:
    proc = _run(part, fault=fault)
    assert proc.returncode == -signal.SIGKILL
    names = os.listdir(ckpt)
    if fault == 'during_save@20':
      # Killed while checkpoint 20 is written: no step-20 folder, the write
      # is left as a temporary folder, checkpoint 10 is intact.
      assert '10' in names and '20' not in names, names
    elif fault == 'after_step@26':
      # Killed right after the RigL mask update of step 26 (update steps
      # are 0, 5, 10, ...): no unfinished write is left behind.
      assert not any('orbax-checkpoint-tmp' in n for n in names), names
  # Resumed from the newest checkpoint: runs to the end.
  proc = _run(part)
  assert proc.returncode == 0, proc.stderr[-2000:]

  res_full = json.loads((full / 'results.json').read_text())
  res_part = json.loads((part / 'results.json').read_text())
  assert res_part['resumed_from_step'] == resumed_from
  for key in ('test_accuracy', 'test_loss', 'global_sparsity', 'steps'):
    assert res_full[key] == res_part[key], key
  assert _metrics(full) == _metrics(part)
  (a, step_a), (b, step_b) = _final(full), _final(part)
  assert step_a == step_b == 40
  _assert_same_state(a, b)
  masks = rigl_jax.get_masks(b.opt_state)
  assert any(m is not None for m in jax.tree.leaves(
      masks, is_leaf=lambda x: x is None))


@pytest.mark.slow
def test_sigterm_saves_a_checkpoint_then_resume_finishes(tmp_path):
  wd = tmp_path / 'wd'
  proc = _run(wd, '--config.num_train_steps=100000', wait=False)
  jsonl = wd / 'metrics.jsonl'
  deadline = time.time() + 300
  while time.time() < deadline and not (
      jsonl.exists() and jsonl.read_text().count('\n') >= 3):
    time.sleep(0.2)
  proc.send_signal(signal.SIGTERM)
  _, err = proc.communicate(timeout=300)
  assert proc.returncode == 143, err[-2000:]
  assert 'preempted' in err and 'rerun the same command' in err
  steps = [int(n) for n in os.listdir(wd / 'checkpoints') if n.isdigit()]
  saved = max(steps)
  assert saved >= 15  # at least the three logged windows
  config = tiny_config(steps=100000)
  state, step = builders.restore_train_state(config, str(wd))
  assert step == saved and int(state.step) == saved


def _corrupt(ckpt_dir, step, how):
  state_dir = os.path.join(ckpt_dir, str(step), 'state')
  files = []
  for root, _, fs in os.walk(state_dir):
    files += [os.path.join(root, f) for f in fs]
  if how == 'flip':
    # Flip bytes in the biggest data file: still readable, wrong values.
    target = max(files, key=os.path.getsize)
    data = bytearray(open(target, 'rb').read())
    for i in range(len(data) // 2, len(data) // 2 + 16):
      data[i] ^= 0xFF
    open(target, 'wb').write(bytes(data))
  else:  # 'delete': the state is gone, the meta is still there
    shutil.rmtree(state_dir)


def _checkpoints(ckpt_dir):
  return sorted(int(n) for n in os.listdir(ckpt_dir) if n.isdigit())


@pytest.mark.parametrize('how', ['flip', pytest.param('delete', marks=pytest.mark.slow)])
def test_damaged_newest_checkpoint_falls_back_to_previous(tmp_path, how,
                                                          monkeypatch,
                                                          trained_run):
  # The shared 20-step run is the uninterrupted reference; a copy of it
  # with its newest checkpoint damaged resumes from checkpoint 10.
  wd = trained_run.copy_to(tmp_path / 'wd')
  ckpt = os.path.join(wd, 'checkpoints')
  assert _checkpoints(ckpt) == [10, 20]
  _corrupt(ckpt, 20, how)
  warnings = []
  monkeypatch.setattr(logging, 'warning',
                      lambda msg, *a: warnings.append(msg % a))
  res = train.train_and_evaluate(trained_run.config, wd)
  assert res['resumed_from_step'] == 10
  assert any('Checkpoint 20 is damaged' in w for w in warnings), warnings
  assert os.path.isdir(os.path.join(ckpt, 'damaged', '20'))  # kept, moved
  assert res['test_accuracy'] == trained_run.results['test_accuracy']
  assert res['test_loss'] == trained_run.results['test_loss']


def test_every_checkpoint_damaged_is_one_error_and_nothing_deleted(
    tmp_path, trained_run):
  wd = trained_run.copy_to(tmp_path / 'wd')
  ckpt = os.path.join(wd, 'checkpoints')
  for step in _checkpoints(ckpt):
    _corrupt(ckpt, step, 'flip')
  with pytest.raises(ValueError, match='every checkpoint .* is damaged'):
    train.train_and_evaluate(trained_run.config, wd)
  assert os.path.isdir(os.path.join(ckpt, '10'))
  assert os.path.isdir(os.path.join(ckpt, '20'))


@pytest.mark.parametrize('field, value, needle', [
    ('sparsity.sparsity', 0.8, 'sparsity.sparsity: 0.9 -> 0.8'),
    pytest.param('model.kwargs.hidden_sizes', (64, 16),
                 'model.kwargs.hidden_sizes', marks=pytest.mark.slow),
    pytest.param('sparsity.method', 'set', "sparsity.method: 'rigl' -> 'set'",
                 marks=pytest.mark.slow),
])
def test_checkpoint_of_another_config_is_refused(tmp_path, field, value,
                                                 needle, trained_run):
  wd = trained_run.copy_to(tmp_path / 'wd')
  before = sorted(os.listdir(os.path.join(wd, 'checkpoints')))
  with pytest.raises(ValueError, match='different config') as e:
    train.train_and_evaluate(tiny_config(**{field: value}), wd)
  assert needle in str(e.value)
  assert sorted(os.listdir(os.path.join(wd, 'checkpoints'))) == before


@pytest.mark.slow
def test_operational_fields_may_change_on_resume(tmp_path):
  wd = tmp_path / 'wd'
  train.train_and_evaluate(tiny_config(steps=10), str(wd))
  res = train.train_and_evaluate(
      tiny_config(steps=10, log_every_steps=2, checkpoint_every_steps=5),
      str(wd))
  assert res['resumed_from_step'] == 10


def _nan_at(step):
  def poison(index, b):
    if index + 1 == step:
      return dict(b, image=np.full_like(b['image'], np.nan))
    return b
  return helpers.with_train_batches(data_lib.get_data, poison)


def test_nan_loss_stops_naming_the_step_and_keeps_good_checkpoint(
    tmp_path, monkeypatch):
  monkeypatch.setattr(train.data_lib, 'get_data', _nan_at(13))
  wd = tmp_path / 'wd'
  with pytest.raises(train.NonFiniteError, match='at step 13') as e:
    train.train_and_evaluate(tiny_config(steps=20), str(wd))
  assert 'last good checkpoint is step 10' in str(e.value)
  assert sorted(n for n in os.listdir(wd / 'checkpoints')
                if n.isdigit()) == ['10']
  state, _ = builders.restore_train_state(tiny_config(steps=20), str(wd))
  assert all(np.isfinite(np.asarray(x)).all()
             for x in jax.tree.leaves(state.params))


def test_nan_steps_skipped_when_configured(tmp_path, monkeypatch):
  monkeypatch.setattr(train.data_lib, 'get_data', _nan_at(13))
  res = train.train_and_evaluate(
      tiny_config(steps=20, on_nonfinite='skip'), str(tmp_path))
  assert res['skipped_steps'] == 1 and res['steps'] == 20
  assert np.isfinite(res['test_loss'])


@pytest.mark.slow
def test_main_reports_nan_as_one_error_line(tmp_path):
  proc = _run(tmp_path / 'wd', '--config.optimizer.learning_rate=1e30',
              '--config.optimizer.warmup_fraction=0.0',
              '--config.num_train_steps=20')
  assert proc.returncode == 2
  err = [l for l in proc.stderr.splitlines() if l.startswith('error:')]
  assert len(err) == 1 and 'non-finite loss or gradients at step' in err[0]
