"""Tutorial 3: experiments with main.py, configs, sweeps, and the results.

1. One run of `configs/default.py` (RigL, 90% ERK, the MLP on the bundled
   Fashion-MNIST), shortened from the command line.
2. The config's sweep (RigL and SET at 80% and 90%) with
   `experiments/sweep.py run`, then `collect` into one table.
3. Reading a run: `results.json`, `metrics.jsonl` with pandas, a plot, and
   the TensorBoard events.

Every hyperparameter is a config field; `--config.a.b=value` overrides one.
Run from the repository root: python docs/tutorials/experiments.py
(about three minutes on 2 CPU cores).
"""

import json
import os
import subprocess
import sys
import tempfile

import matplotlib
matplotlib.use('Agg')
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
import pandas as pd

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), '..', '..'))
work = tempfile.mkdtemp(prefix='rigl_tutorial_')


def sh(*args):
  """Runs a command from the repository root, failing loudly."""
  print('$', ' '.join(args), flush=True)
  subprocess.run([sys.executable, *args], cwd=ROOT, check=True)


# 1. One run: 2 epochs instead of 20.
run = os.path.join(work, 'run')
sh('main.py', '--config', 'configs/default.py', '--workdir', run,
   '--config.num_epochs=2')

# 2. The sweep declared by configs/default.py:get_sweep(), half an epoch
# per run. `run` skips finished runs and resumes the others, so it can be
# restarted; it ends with `collect` (results.csv and results.md: mean and
# std over seeds for each swept setting), which also runs on its own.
sweep = os.path.join(work, 'sweep')
sh('experiments/sweep.py', 'run', '--config', 'configs/default.py',
   '--root', sweep, '--set', 'num_epochs=0.5')
table = pd.read_csv(os.path.join(sweep, 'results.csv'))
print(table.columns.tolist())

# 3. Reading one run.
with open(os.path.join(run, 'results.json')) as f:
  results = json.load(f)
print(f"test accuracy {results['test_accuracy']:.4f}, global sparsity "
      f"{results['global_sparsity']:.3f}, {results['steps']} steps in "
      f"{results['wall_time_s']:.0f} s")

metrics = pd.read_json(os.path.join(run, 'metrics.jsonl'), lines=True)
print('logged columns:', ', '.join(sorted(metrics.columns)[:12]), '...')
train = metrics.dropna(subset=['train_loss'])
fig, (loss_ax, churn_ax) = plt.subplots(1, 2, figsize=(9, 3))
loss_ax.plot(train['step'], train['train_loss'])
loss_ax.set(xlabel='step', ylabel='train loss')
sparsity = metrics.dropna(subset=['sparsity/dense0/kernel'])
churn_ax.plot(sparsity['step'], sparsity['sparsity/dense0/kernel'])
churn_ax.set(xlabel='step', ylabel='dense0 sparsity')
fig.tight_layout()
fig.savefig(os.path.join(work, 'curves.png'))
print('plot:', os.path.join(work, 'curves.png'))
print('TensorBoard: tensorboard --logdir', run)
assert results['test_accuracy'] > 0.8
