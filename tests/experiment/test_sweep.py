"""The sweep launcher: expansion, commands, a local 2x2 sweep, the table."""

import csv
import json
import os
import re
import subprocess
import sys

import pytest

from experiments import sweep
from tests import helpers

REPO = helpers.REPO
DEFAULT = os.path.join(REPO, 'configs', 'default.py')


def test_expand_product_and_union():
  runs = sweep.expand({'a': [1, 2], 'b': ['x', 'y']})
  assert runs == [{'a': 1, 'b': 'x'}, {'a': 1, 'b': 'y'},
                  {'a': 2, 'b': 'x'}, {'a': 2, 'b': 'y'}]
  runs = sweep.expand([{'m': 'dense', 's': 0.0}, {'m': ['rigl'], 's': [0.5,
                                                                     0.9]},
                       {'m': 'dense', 's': 0.0}])
  assert runs == [{'m': 'dense', 's': 0.0}, {'m': 'rigl', 's': 0.5},
                  {'m': 'rigl', 's': 0.9}]
  with pytest.raises(ValueError, match='non-empty dict'):
    sweep.expand([{}])


@pytest.mark.parametrize('bad, match', [
    ([], 'the sweep is empty'),
    ({'sparsity.sparsity': [], 'seed': [0]},
     "gives 'sparsity.sparsity' no values"),
])
def test_a_sweep_with_no_runs_is_an_error(bad, match):
  # It had given zero runs, an empty table and exit 0.
  with pytest.raises(ValueError, match=match):
    sweep.expand(bad)


def _sweep_file(tmp_path, sweep_dict):
  path = tmp_path / 'sw_config.py'
  path.write_text('from configs.default import get_config\n'
                  f'def get_sweep():\n  return {sweep_dict!r}\n')
  return str(path)


def test_runs_that_would_share_a_workdir_get_their_own(tmp_path):
  # 0.1 and 0.1000001 print alike at 6 digits, 'dense0/' and 'dense0_'
  # alike in a folder name: the second run of each pair had been skipped
  # as "done already" and its one result counted twice.
  config = _sweep_file(tmp_path, [
      {'optimizer.learning_rate': [0.1, 0.1000001, 0.2]},
      {'sparsity.is_sparse': [('dense0/',), ('dense0_',)]}])
  planned = sweep.plan(config, str(tmp_path / 'root'))
  workdirs = [run['workdir'] for run in planned]
  assert len(set(workdirs)) == 5
  names = [os.path.basename(w) for w in workdirs]
  assert names[2] == 'learning_rate=0.2'  # no collision, no suffix
  assert all(',~' in n for i, n in enumerate(names) if i != 2)


def test_a_set_on_a_swept_field_is_an_error(tmp_path, capsys):
  # It had overridden every run's value while the names kept the sweep's.
  assert sweep.main(['print', '--config', DEFAULT, '--root',
                     str(tmp_path), '--set', 'sparsity.sparsity=0.5']) == 2
  err = capsys.readouterr().err
  assert err.count('\n') == 1
  assert '--set sparsity.sparsity overrides a field the sweep varies' in err


def test_strings_in_a_swept_tuple_keep_their_quotes():
  # main.py reads a tuple as a Python literal: "(dense0, head)" had been
  # read as one string, a regex that matched no leaf.
  cmd = sweep.command('c.py', '/w', {'sparsity.is_sparse': ('dense0', 'head'),
                                     'sparsity.method': 'rigl'})
  assert "--config.sparsity.is_sparse=('dense0', 'head')" in cmd
  assert '--config.sparsity.method=rigl' in cmd


def test_names_and_commands():
  run = {'sparsity.method': 'rigl', 'sparsity.sparsity': 0.9, 'seed': 1,
         'model.kwargs.hidden_sizes': (64,)}
  assert sweep.run_name(run) == 'method=rigl,sparsity=0.9,seed=1,hidden_sizes=64'
  cmd = sweep.command('c.py', '/w', run, python='python')
  assert cmd[:5] == ['python', os.path.join(REPO, 'main.py'), '--config',
                     'c.py', '--workdir']
  assert '--config.model.kwargs.hidden_sizes=(64,)' in cmd
  assert '--config.sparsity.sparsity=0.9' in cmd


def test_default_config_declares_a_2x2_sweep():
  runs = sweep.expand(sweep.load_sweep(DEFAULT))
  assert len({r['sparsity.method'] for r in runs}) >= 2
  assert len({r['sparsity.sparsity'] for r in runs}) >= 2


def test_print_gives_one_command_per_run(tmp_path, capsys):
  assert sweep.main(['print', '--config', DEFAULT, '--root', str(tmp_path),
                     '--set', 'num_epochs=1']) == 0
  lines = capsys.readouterr().out.strip().splitlines()
  assert len(lines) == 4
  assert all(l.startswith('python ') and '--config.num_epochs=1' in l
             for l in lines)
  assert len({l.split('--workdir ')[1].split()[0] for l in lines}) == 4


@pytest.mark.slow
def test_local_sweep_end_to_end_and_collected_table(tmp_path):
  root = tmp_path / 'sw'
  sets = ['num_train_steps=10', 'data.train_fraction=0.05',
          'data.eval_batch_size=500', 'model.kwargs.hidden_sizes=(64, 32)',
          'sparsity.update_freq=5']
  cmd = [sys.executable, os.path.join(REPO, 'experiments', 'sweep.py'), 'run',
         '--config', DEFAULT, '--root', str(root)]
  for s in sets:
    cmd += ['--set', s]
  proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO,
                        timeout=900)
  assert proc.returncode == 0, proc.stdout + proc.stderr[-2000:]
  runs = json.loads((root / 'sweep.json').read_text())['runs']
  assert len(runs) == 4
  for run in runs:
    res = json.loads(open(os.path.join(run['workdir'], 'results.json')).read())
    assert res['global_sparsity'] == pytest.approx(
        run['settings']['sparsity.sparsity'], abs=0.01)
    assert res['config']['sparsity']['method'] == run['settings'][
        'sparsity.method']
  with open(root / 'results.csv') as f:
    rows = list(csv.DictReader(f))
  assert len(rows) == 4
  assert {(r['sparsity.method'], r['sparsity.sparsity']) for r in rows} == {
      ('rigl', '0.8'), ('rigl', '0.9'), ('set', '0.8'), ('set', '0.9')}
  md = (root / 'results.md').read_text()
  assert md.count('\n') == 6 and 'test_accuracy' in md
  # A second start finds every run done and only rebuilds the table.
  proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO,
                        timeout=300)
  assert proc.returncode == 0 and proc.stdout.count('done already') == 4


def test_unfinished_ticket_search_is_rerun_and_not_collected(tmp_path, capsys):
  """A ticket search rewrites results.json after every round with
  "complete": false; sweeps must resume it and leave it out of the table."""
  from rigl_jax.experiment import results  # pylint: disable=g-import-not-at-top
  root = tmp_path / 'sw'
  runs = []
  for name, complete in (('done', True), ('half', False)):
    workdir = str(root / name)
    os.makedirs(workdir)
    results.write(workdir, {'config': {'sparsity': {'sparsity': 0.9}},
                            'test_accuracy': 0.5, 'complete': complete})
    runs.append({'name': name, 'workdir': workdir,
                 'settings': {'sparsity.sparsity': 0.9}, 'command': ['false']})
  (root / 'sweep.json').write_text(json.dumps({'runs': runs}))
  columns, rows = sweep.collect(str(root))
  assert [r['n'] for r in rows] == [1]
  assert 'unfinished: half' in capsys.readouterr().err
  # run_all skips the finished run and starts the unfinished one (its
  # command fails here, which is reported).
  assert sweep.run_all(runs) == ['half']
  out = capsys.readouterr().out
  assert 'done: done already' in out
  # A failed run's line ends with the last line of its log.
  with open(os.path.join(runs[1]['workdir'], 'sweep.log'), 'a') as f:
    f.write('error: sparsity must be in [0, 1)\n')
  assert sweep.run_all(runs) == ['half']
  assert re.search(r'half: FAILED \(1\) in \d+ s: error: sparsity must be '
                   r'in \[0, 1\)$', capsys.readouterr().out, re.M)
