"""Command-line mistakes: one `error:` line, exit 2, for every command."""

import os
import re
import subprocess
import sys

import pytest

from rigl_jax.deploy import cli as deploy_cli
from rigl_jax.experiment import cli
from tests import helpers

sys.path.insert(0, helpers.REPO)
from experiments import sweep  # pylint: disable=g-import-not-at-top,wrong-import-position

CONFIG = {'seed': 0, 'model': {'name': 'mlp', 'kwargs': {}},
          'sparsity': {'sparsity': 0.9, 'method': 'rigl'}}


@pytest.mark.parametrize('dotted, want', [
    ('sparsity.sparsity', None),
    ('model.kwargs', None),
    ('sparsity.sparsty', 'did you mean config.sparsity.sparsity?'),
    ('sparsty.sparsity', 'unknown field config.sparsty; did you mean '
                         'config.sparsity?'),
    ('optimizer.lr', 'unknown field config.optimizer (fields of config: '
                     'model, seed, sparsity)'),
    ('model.kwargs.hidden_sizes', 'config.model.kwargs is empty; set it '
                                  "whole: --config.model.kwargs=\"{'hidden_"
                                  "sizes': ...}\""),
    ('seed.x', 'config.seed holds a value of type int, not a section'),
])
def test_override_problem_names_the_closest_field(dotted, want):
  got = cli.override_problem(CONFIG, dotted)
  if want is None:
    assert got is None
  else:
    assert want in got, got


def _one_error_line(capsys, fn, *args):
  with pytest.raises(SystemExit) as e:
    fn(*args)
  assert e.value.code == 2
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1 and err[0].startswith('error: '), err
  return err[0]


def test_deploy_cli_bad_arguments(capsys):
  line = _one_error_line(capsys, deploy_cli.main, ['--workdir', 'x',
                                                    '--compresed'])
  assert 'unrecognized arguments: --compresed' in line


def test_sweep_bad_action_and_unknown_field(capsys, tmp_path):
  line = _one_error_line(capsys, sweep.main, ['prnt', '--root',
                                               str(tmp_path)])
  assert "invalid choice: 'prnt'" in line and "'print'" in line
  config = os.path.join(helpers.REPO, 'configs', 'default.py')
  assert sweep.main(['print', '--config', config, '--root', str(tmp_path),
                     '--set', 'sparsity.sparsty=0.5']) == 2
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1 and 'did you mean config.sparsity.sparsity?' in err[0]
  assert not os.listdir(tmp_path)  # nothing planned, nothing run


def test_flops_cli_typo_is_one_line():
  proc = subprocess.run(
      [sys.executable, '-m', 'rigl_jax.analysis', '--config',
       os.path.join(helpers.REPO, 'configs', 'default.py'),
       '--config.sparsity.distributon=erk'],
      capture_output=True, text=True, cwd=helpers.REPO, timeout=300)
  assert proc.returncode == 2
  err = [l for l in proc.stderr.splitlines() if l.startswith('error:')]
  assert len(err) == 1 and 'config.sparsity.distribution?' in err[0], err
  assert 'Traceback' not in proc.stderr


def test_flops_cli_prints_its_report_and_no_library_chatter():
  proc = subprocess.run(
      [sys.executable, '-m', 'rigl_jax.analysis', '--config',
       os.path.join(helpers.REPO, 'configs', 'default.py')],
      capture_output=True, text=True, cwd=helpers.REPO, timeout=300)
  assert proc.returncode == 0, proc.stderr[-2000:]
  lines = (proc.stdout + proc.stderr).splitlines()
  # Old code: jax's "Unable to initialize backend 'tpu'" INFO line first.
  assert lines[0].startswith('mlp on fashion_mnist: sparsity 0.9'), lines
  assert not [l for l in lines if re.match(r'[IW]\d{4} ', l)], lines
  assert any(l.strip().startswith('rigl ') for l in lines)


def test_load_config_as_config_flags_loads_it(tmp_path):
  config = cli.load_config(
      os.path.join(helpers.REPO, 'configs/imagenet_resnet50.py') +
      ':method=set,dist=uniform,sparsity=0.8')
  assert (config.sparsity.method, config.sparsity.distribution,
          config.sparsity.sparsity) == ('set', 'uniform', 0.8)
  with pytest.raises(ValueError, match='not found'):
    cli.load_config(str(tmp_path / 'missing.py'))
  empty = tmp_path / 'empty.py'
  empty.write_text('X = 1\n')
  with pytest.raises(ValueError, match='defines no get_config'):
    cli.load_config(str(empty))


@pytest.mark.parametrize('args, want', [
    # The config file's own error, not only "Error whilst parsing" (the
    # traceback after that line had been cut off).
    (['--config', 'configs/default.py:foo'],
     'get_config() takes 0 positional arguments but 1 was given'),
    # Had been "module 'config_config' has no attribute 'get_config".
    (['--config', '{tmp}/no_get_config.py'],
     'no_get_config.py defines no get_config()'),
    # Had printed the whole usage and exited with 1.
    (['--config', 'configs/default.py', 'extra'],
     "unexpected argument(s) ['extra']"),
])
def test_main_py_bad_command_line_is_one_line(tmp_path, args, want):
  (tmp_path / 'no_get_config.py').write_text('X = 1\n')
  args = [a.format(tmp=tmp_path) for a in args]
  proc = subprocess.run(
      [sys.executable, os.path.join(helpers.REPO, 'main.py'), *args,
       '--workdir', str(tmp_path / 'run')],
      capture_output=True, text=True, cwd=helpers.REPO, timeout=300)
  assert proc.returncode == 2, proc.stderr[-2000:]
  err = [l for l in proc.stderr.splitlines() if l.strip()]
  assert len(err) == 1 and err[0].startswith('error: '), err
  assert want in err[0], err
  assert not (tmp_path / 'run').exists()
