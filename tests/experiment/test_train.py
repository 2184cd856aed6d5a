"""The experiment system: train_and_evaluate, resume, results, bad input."""

import json
import os
import re
import subprocess
import sys

import jax
import numpy as np
import pytest
import tensorflow_datasets as tfds

import rigl_jax
from rigl_jax.experiment import builders
from rigl_jax.experiment import data as data_lib
from rigl_jax.experiment import train
from tests import helpers
from tests.runs import tiny_config

REPO = helpers.REPO


def test_default_config_few_steps_writes_results(trained_run):
  results, workdir = trained_run.results, trained_run.workdir
  saved = json.loads(open(os.path.join(workdir, 'results.json')).read())
  assert saved['steps'] == results['steps'] == 20
  assert 0.3 < saved['test_accuracy'] <= 1.0  # learned something in 20 steps
  assert saved['global_sparsity'] == pytest.approx(0.9, abs=0.01)
  assert saved['weight_sparsity'] >= saved['global_sparsity'] - 1e-6
  assert saved['wall_time_s'] > 0 and saved['config']['sparsity']['method'] == (
      'rigl')
  with open(os.path.join(workdir, 'metrics.jsonl'), encoding='utf-8') as f:
    lines = [json.loads(l) for l in f]
  train_rows = [r for r in lines if 'train_loss' in r]
  assert [r['step'] for r in train_rows] == [5, 10, 15, 20]
  assert all('sparsity/global' in r and 'train_mask_churn' in r
             and 'train_learning_rate' in r and r['steps_per_sec'] > 0
             for r in train_rows)
  assert any(r['train_mask_churn'] > 0 for r in train_rows)
  assert any('eval_accuracy' in r for r in lines)
  assert any(f.startswith('events.out.tfevents') for f in os.listdir(workdir))


def _final_state(workdir, config):
  return builders.restore_train_state(config, workdir)[0]


def test_a_finished_run_started_again_keeps_its_results(tmp_path,
                                                       trained_run):
  # A second start had evaluated again and replaced results.json: the
  # training's wall time became the evaluation's, resumed_from_step the end.
  workdir = trained_run.copy_to(tmp_path / 'done')
  with open(os.path.join(workdir, 'results.json'), 'rb') as f:
    before = f.read()
  results = train.train_and_evaluate(trained_run.config, workdir)
  with open(os.path.join(workdir, 'results.json'), 'rb') as f:
    assert f.read() == before
  assert results == trained_run.results
  assert results['resumed_from_step'] == 0


def test_resume_continues_at_the_right_step_with_same_masks(
    tmp_path, monkeypatch, trained_run):
  config = trained_run.config  # tiny_config(steps=20)
  full = trained_run.workdir

  # Crash after 15 steps: the checkpoint of step 10 survives.
  real_get_data = data_lib.get_data

  def crash_at_15(index, b):
    if index == 15:
      raise RuntimeError('simulated preemption')
    return b

  crashing_get_data = helpers.with_train_batches(real_get_data, crash_at_15)

  part = tmp_path / 'part'
  monkeypatch.setattr(train.data_lib, 'get_data', crashing_get_data)
  with pytest.raises(RuntimeError, match='preemption'):
    train.train_and_evaluate(config, str(part))
  monkeypatch.setattr(train.data_lib, 'get_data', real_get_data)
  assert not (part / 'results.json').exists()
  results = train.train_and_evaluate(config, str(part))
  assert results['resumed_from_step'] == 10 and results['steps'] == 20

  a, b = _final_state(str(full), config), _final_state(str(part), config)
  assert int(a.step) == int(b.step) == 20
  masks_a = rigl_jax.get_masks(a.opt_state)
  masks_b = rigl_jax.get_masks(b.opt_state)
  for x, y in zip(jax.tree.leaves(masks_a), jax.tree.leaves(masks_b)):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
  for x, y in zip(jax.tree.leaves(a.params), jax.tree.leaves(b.params)):
    np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-5,
                               atol=1e-6)


def test_shakespeare_lstm_reports_bits_per_char(tmp_path):
  config = tiny_config(steps=6)
  config.data = data_lib.default_data_config('shakespeare')
  config.data.batch_size = 8
  config.data.seq_len = 32
  config.data.eval_batch_size = 2048  # few eval batches
  config.data.train_fraction = 0.01
  config.model.name = 'char_lstm'
  config.model.kwargs = {'embed_dim': 16, 'hidden_size': 32, 'num_layers': 1}
  config.sparsity.sparsity = 0.75
  config.sparsity.distribution = 'uniform'
  config.sparsity.update_freq = 3
  config.eval_split = 'validation'
  results = train.train_and_evaluate(config, str(tmp_path))
  assert 0.0 < results['test_bits_per_char'] < 8.0
  assert results['global_sparsity'] == pytest.approx(0.75, abs=0.01)


@pytest.mark.parametrize('name, model, image_size', [
    # One grayscale and one RGB pipeline (with its resize) by default.
    ('mnist', 'lenet_300_100', None),
    pytest.param('fashion_mnist', 'mlp', None, marks=pytest.mark.slow),
    pytest.param('cifar10', 'small_cnn', None, marks=pytest.mark.slow),
    pytest.param('cifar100', 'small_cnn', None, marks=pytest.mark.slow),
    ('imagenet2012', 'small_cnn', 32),
])
def test_one_step_on_each_tfds_pipeline(tmp_path, name, model, image_size):
  config = tiny_config(steps=1)
  config.data = data_lib.default_data_config(name)
  config.data.source = 'tfds'
  config.data.batch_size = 8
  config.data.eval_batch_size = 8
  if image_size:
    config.data.image_size = image_size
  config.model.name = model
  config.model.kwargs = ({'channels': (4, 8), 'hidden_size': 16}
                         if model == 'small_cnn' else {})
  config.sparsity.update_freq = 1
  config.eval_split = None
  with tfds.testing.mock_data(num_examples=16):
    results = train.train_and_evaluate(config, str(tmp_path))
  assert results['steps'] == 1
  assert 0.0 <= results['test_accuracy'] <= 1.0
  assert results['global_sparsity'] == pytest.approx(0.9, abs=0.02)


def test_token_lm_on_lm1b_reports_perplexity(tmp_path):
  config = tiny_config(steps=2)
  config.data = data_lib.default_data_config('lm1b')
  config.data.source = 'tfds'
  config.data.update(vocab_size=48, seq_len=8, batch_size=4,
                     eval_batch_size=8, token_dir=str(tmp_path / 'tokens'))
  config.model.name = 'transformer_lm'
  config.model.kwargs = {'embed_dim': 8, 'num_layers': 1, 'num_heads': 2,
                         'mlp_dim': 16, 'max_len': 8, 'scan_layers': True}
  config.sparsity.update_freq = 1
  config.sparsity.is_sparse = ['(kernel|embedding)$']
  config.eval_split = None
  with tfds.testing.mock_data(num_examples=30):
    results = train.train_and_evaluate(config, str(tmp_path / 'wd'))
  assert results['steps'] == 2
  assert 'test_bits_per_char' not in results
  assert results['test_perplexity'] == pytest.approx(
      np.exp(results['test_loss']), rel=1e-6)
  assert results['global_sparsity'] == pytest.approx(0.9, abs=0.02)


def _main(tmp_path, *overrides, workdir=None, python_flags=()):
  cmd = [sys.executable, *python_flags, os.path.join(REPO, 'main.py'),
         '--config', os.path.join(REPO, 'configs', 'default.py'),
         '--workdir', workdir or str(tmp_path / 'wd'),
         '--config.num_train_steps=2', '--config.data.train_fraction=0.01',
         *overrides]
  return subprocess.run(cmd, capture_output=True, text=True, cwd=REPO,
                        timeout=300)


def test_default_run_prints_a_short_console_without_library_chatter(
    tmp_path):
  proc = _main(tmp_path)
  assert proc.returncode == 0, proc.stderr[-3000:]
  lines = (proc.stdout + proc.stderr).splitlines()
  # Old code: 70+ lines of orbax, TensorFlow, clu and jax INFO logs.
  assert len(lines) < 40, lines
  chatter = [l for l in lines if re.match(r'[IW]\d{4} ', l) or any(
      w in l for w in ('orbax', 'oneDNN', 'absl::InitializeLog',
                       'logging_writer', 'checkpoint_manager'))]
  assert not chatter, chatter
  err = proc.stderr
  assert re.search(r'^step 2/2 100% \| [\d.]+ steps/s', err, re.M), err
  assert 'eval (test) at step 2: loss' in err
  assert f'tensorboard --logdir {tmp_path / "wd"}' in err
  assert re.match(r'test_accuracy=[\d.]+ global_sparsity=0.9000 steps=2 ',
                  proc.stdout)


# A bad choice and a bad range by default (each is a `main.py` subprocess);
# the other choice lists under -m slow.
@pytest.mark.parametrize('override, needles', [
    ('--config.model.name=resnet2', ('config.model.name', "'resnet50'")),
    pytest.param('--config.data.name=svhn',
                 ('config.data.name', "'fashion_mnist'"),
                 marks=pytest.mark.slow),
    pytest.param('--config.sparsity.method=lottery',
                 ('config.sparsity.method', "'rigl'"), marks=pytest.mark.slow),
    pytest.param('--config.sparsity.distribution=gauss',
                 ('config.sparsity.distribution', "'erk'"),
                 marks=pytest.mark.slow),
    ('--config.sparsity.sparsity=1.5', ('config.sparsity.sparsity', '[0, 1)')),
    # Command-line mistakes (old code: a 30-line traceback each).
    ('--config.sparsity.sparsty=0.8',
     ('unknown field config.sparsity.sparsty',
      'did you mean config.sparsity.sparsity?')),
    pytest.param('--config.num_train_steps=1.5',
                 ('--config.num_train_steps=1.5', 'int'),
                 marks=pytest.mark.slow),
    pytest.param('--config.model.kwargs.hidden_sizes=(0,)',
                 ('config.model.kwargs.hidden_sizes', '>= 1'),
                 marks=pytest.mark.slow),
    pytest.param('--config.seed.x=1', ('config.seed', 'not a section'),
                 marks=pytest.mark.slow),
])
def test_bad_config_one_clear_line(tmp_path, override, needles):
  proc = _main(tmp_path, override, python_flags=('-X', 'importtime'))
  assert proc.returncode == 2
  err = [l for l in proc.stderr.splitlines() if l.startswith('error:')]
  assert len(err) == 1 and all(n in err[0] for n in needles), err
  assert 'Traceback' not in proc.stderr
  # Found before the training loop and TensorFlow load (old code: after
  # ~5 s of importing them).
  imported = re.findall(r'^import time:.*\| +(\S+)$', proc.stderr, re.M)
  assert 'rigl_jax.experiment.validation' in imported
  assert 'rigl_jax.experiment.train' not in imported
  assert 'tensorflow' not in imported
  assert not os.path.exists(tmp_path / 'wd')


def test_unwritable_workdir_and_nothing_destroyed(tmp_path):
  blocker = tmp_path / 'file'
  blocker.write_text('keep me')
  proc = _main(tmp_path, workdir=str(blocker / 'sub'))
  assert proc.returncode != 0 and 'cannot create workdir' in proc.stderr
  proc = _main(tmp_path, workdir=str(blocker))  # had said "File exists"
  assert proc.returncode != 0 and 'is a file, not a directory' in proc.stderr
  assert blocker.read_text() == 'keep me'


def test_nm_from_the_experiment_config(tmp_path):
  config = tiny_config(steps=12, **{'sparsity.structure': '2:4',
                                    'sparsity.sparsity': 0.5})
  res = train.train_and_evaluate(config, str(tmp_path))
  assert res['global_sparsity'] == pytest.approx(0.5)
  state, _ = builders.restore_train_state(config, str(tmp_path))
  for mk in jax.tree.leaves(rigl_jax.get_masks(state.opt_state)):
    assert rigl_jax.structure.satisfies(mk, (2, 4))


def test_the_final_model_is_evaluated_once(tmp_path, monkeypatch):
  calls = []
  real = train.evaluate
  monkeypatch.setattr(train, 'evaluate',
                      lambda *a, **k: calls.append(1) or real(*a, **k))
  res = train.train_and_evaluate(tiny_config(steps=10), str(tmp_path))
  assert len(calls) == 1 and 'test_accuracy' in res
  # A run resumed at its end evaluates its final checkpoint, unless it has
  # written its results already (`test_a_finished_run_started_again_...`).
  again = train.train_and_evaluate(tiny_config(steps=10), str(tmp_path))
  assert len(calls) == 1 and again['wall_time_s'] == res['wall_time_s']
  os.remove(tmp_path / 'results.json')
  again = train.train_and_evaluate(tiny_config(steps=10), str(tmp_path))
  assert len(calls) == 2 and again['resumed_from_step'] == 10
  assert again['test_accuracy'] == res['test_accuracy']


def test_profile_steps_writes_one_trace(tmp_path):
  """``config.profile_steps`` records a profiler trace (clu's Profile)."""
  res = train.train_and_evaluate(tiny_config(steps=10, profile_steps=2),
                                 str(tmp_path))
  assert res['steps'] == 10
  traces = [f for _, _, files in os.walk(tmp_path / 'plugins' / 'profile')
            for f in files if f.endswith('.xplane.pb')]
  assert len(traces) == 1
