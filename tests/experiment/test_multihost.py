"""Two real JAX processes on this machine (CPU, gloo collectives), 2 devices
each: the same masks and results as one process, metrics written once."""

import json
import os
import socket
import subprocess
import sys

import jax
import numpy as np
import pytest

import rigl_jax
from rigl_jax.experiment import builders
from rigl_jax.experiment import train
from tests.runs import tiny_config
from tests import helpers

REPO = helpers.REPO
FLAGS = ('--config.num_train_steps=20', '--config.log_every_steps=5',
         '--config.checkpoint_every_steps=10',
         '--config.model.kwargs.hidden_sizes=(64, 32)',
         '--config.data.train_fraction=0.05',
         '--config.data.eval_batch_size=500', '--config.sparsity.update_freq=5')


def _free_port():
  with socket.socket() as s:
    s.bind(('localhost', 0))
    return s.getsockname()[1]


@pytest.mark.slow
def test_two_processes_match_one(tmp_path):
  wd = tmp_path / 'multi'
  port = _free_port()
  procs = []
  for i in range(2):
    env = dict(os.environ, JAX_COORDINATOR_ADDRESS=f'localhost:{port}',
               JAX_NUM_PROCESSES='2', JAX_PROCESS_ID=str(i),
               XLA_FLAGS=(os.environ.get('XLA_FLAGS', '') +
                          ' --xla_force_host_platform_device_count=2').strip())
    procs.append(subprocess.Popen(
        [sys.executable, os.path.join(REPO, 'main.py'), '--config',
         os.path.join(REPO, 'configs', 'default.py'), '--workdir', str(wd),
         *FLAGS], env=env, cwd=REPO, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True))
  outs = [p.communicate(timeout=600) for p in procs]
  for p, (out, err) in zip(procs, outs):
    assert p.returncode == 0, err[-3000:]
  # Both processes report the same global result.
  assert outs[0][0].splitlines()[-1].split()[0] == outs[1][0].splitlines(
  )[-1].split()[0]

  config = tiny_config(steps=20)
  single = train.train_and_evaluate(config, str(tmp_path / 'single'))
  multi = json.loads((wd / 'results.json').read_text())
  assert multi['num_devices'] == 4
  assert multi['test_loss'] == pytest.approx(single['test_loss'], rel=1e-4)
  # Only process 0 writes metrics: one row per log step, not two.
  steps = [json.loads(l)['step'] for l in
           (wd / 'metrics.jsonl').read_text().splitlines()]
  assert steps.count(5) == 1 and steps.count(20) >= 1
  # The sharded multi-process checkpoint restores in this single process,
  # with the single-process run's masks.
  a, _ = builders.restore_train_state(config, str(wd))
  b, _ = builders.restore_train_state(config, str(tmp_path / 'single'))
  for x, y in zip(jax.tree.leaves(rigl_jax.get_masks(a.opt_state)),
                  jax.tree.leaves(rigl_jax.get_masks(b.opt_state))):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
  for x, y in zip(jax.tree.leaves(a.params), jax.tree.leaves(b.params)):
    # Float summation order differs (all-reduce over 4 devices).
    np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-3,
                               atol=1e-4)
