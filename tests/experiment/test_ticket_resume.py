"""Ticket searches SIGKILLed mid-phase resume to the uninterrupted result."""

import ast
import importlib
import json
import os
import signal
import subprocess
import sys

import pytest

from rigl_jax.experiment import ticket_search
from tests import helpers
from tests.runs import set_fields

REPO = helpers.REPO

# 8 steps per phase (2 epochs of 4 on 1% of Fashion-MNIST), a checkpoint
# every 4: a search's checkpoint number is phase * 9 + step.
TINY = ('--config.data.train_fraction=0.01',
        '--config.data.eval_batch_size=2500',
        '--config.num_train_steps=8', '--config.log_every_steps=4',
        '--config.checkpoint_every_steps=4')
SEARCHES = {
    # Phases: round 0 | round 1.
    'imp1': ('imp_fashion_mnist.py', '--config.imp.rounds=1',
             '--config.imp.rewind_step=2', '--config.imp.controls=()'),
    # Phases: round 0 | round 1, its random_mask control.
    'imp': ('imp_fashion_mnist.py', '--config.imp.rounds=1',
            '--config.imp.rewind_step=2',
            "--config.imp.controls=('random_mask',)"),
    # Phases: round 0 | round 1, control | round 2, control.
    'imp2': ('imp_fashion_mnist.py', '--config.imp.rounds=2',
             '--config.imp.rewind_step=2',
             "--config.imp.controls=('random_mask',)"),
    # Phases: lambda 0: rounds 0, 1, ticket | lambda 1: rounds 0, 1, ticket.
    'cs': ('cs_fashion_mnist.py', '--config.cs.lambdas=(0.0, 1.0)',
           '--config.cs.rounds=2', '--config.cs.rewind_step=1',
           '--config.cs.mask_init=0.05'),
}


def _run(search, workdir, fault=None):
  env = dict(os.environ)
  env.pop('RIGL_JAX_FAULT', None)
  if fault:
    env['RIGL_JAX_FAULT'] = fault
  config, *flags = SEARCHES[search]
  cmd = [sys.executable, os.path.join(REPO, 'main.py'), '--config',
         os.path.join(REPO, 'configs', config), '--workdir', str(workdir),
         *TINY, *flags]
  return subprocess.run(cmd, cwd=REPO, env=env,
                        capture_output=True, text=True, timeout=600)


def _config(search):
  """The config `_run` gives ``main.py`` (its ``--config.x=v`` flags)."""
  config_file, *flags = SEARCHES[search]
  module = importlib.import_module('configs.' + config_file[:-len('.py')])
  config = module.get_config()
  for flag in (*TINY, *flags):
    key, value = flag[len('--config.'):].split('=', 1)
    set_fields(config, {key: ast.literal_eval(value)})
  return config


def _results(workdir):
  with open(os.path.join(workdir, 'results.json'), encoding='utf-8') as f:
    res = json.load(f)
  res.pop('wall_time_s')
  return res


# Kill points (checkpoint numbers). Default: IMP in round 1 at step 7
# (resumes from its step 4). Under -m slow: IMP in round 1's control at
# step 7 (resumes from its step 4); IMP killed in round 0 at
# step 6 (past the rewind step: resumes from step 4 with the rewind point
# saved) and again in round 2's control at step 7; CS killed inside lambda
# 0's ticket at step 5, then in lambda 1's round 0 right after the
# checkpoint of step 4 was committed.
@pytest.mark.parametrize('search, faults, resumed_at', [
    ('imp1', ('after_step@16',), 'phase 1, step 4'),
    pytest.param('imp', ('after_step@25',), 'phase 2, step 4',
                 marks=pytest.mark.slow),
    pytest.param('imp2', ('after_step@6', 'after_step@43'), 'phase 4, step 4',
                 marks=pytest.mark.slow),
    pytest.param('cs', ('after_step@23', 'after_save@31'), 'phase 3, step 4',
                 marks=pytest.mark.slow)])
def test_killed_search_resumes_to_the_uninterrupted_tickets(
    tmp_path, search, faults, resumed_at):
  # The uninterrupted search in this process: one `main.py` start fewer.
  full = tmp_path / 'full'
  ticket_search.run(_config(search), str(full))

  part = tmp_path / 'part'
  for fault in faults:
    proc = _run(search, part, fault)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-3000:]
    if os.path.exists(part / 'results.json'):
      assert not _results(part)['complete']
  proc = _run(search, part)
  assert proc.returncode == 0, proc.stderr[-3000:]
  # Old code started the search again from round 0.
  assert f'resuming at {resumed_at}' in proc.stderr, proc.stderr[-3000:]
  # Same tickets, sparsities and accuracies, row for row.
  assert _results(part) == _results(full)
