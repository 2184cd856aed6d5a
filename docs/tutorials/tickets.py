"""Tutorial 4: lottery-ticket search with IMP and Continuous Sparsification.

Both searches are `main.py` configs (`config.ticket_search` selects the
driver); each writes `results.json` after every round, so a killed search
resumes where it stopped. Shortened here to run in a few minutes:

* IMP with rewinding (Frankle et al.): train, prune 20% of the remaining
  weights by global magnitude, rewind, retrain; 3 rounds of 1 epoch.
* Continuous Sparsification (Savarese et al.): learn soft mask logits with
  an L0-like penalty, then retrain the ticket; one lambda, one round of 2
  epochs.

The ticket search's rules (pruning, rewinding, CS's gates) are in the core
(`rigl_jax.tickets`); a ticket trains as Static sparse training with its
mask: `rigl_jax.sparsify(inner, 'static', init_masks=ticket)`.

Run from the repository root: python docs/tutorials/tickets.py
"""

import json
import os
import subprocess
import sys
import tempfile

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), '..', '..'))
work = tempfile.mkdtemp(prefix='rigl_tickets_')


def search(config, *overrides):
  workdir = os.path.join(work, os.path.basename(config)[:-3])
  subprocess.run([sys.executable, 'main.py', '--config', config, '--workdir',
                  workdir, *overrides], cwd=ROOT, check=True)
  with open(os.path.join(workdir, 'results.json')) as f:
    return json.load(f)


imp = search('configs/imp_fashion_mnist.py', '--config.imp.rounds=3',
             '--config.num_epochs=1')
print('IMP: round, sparsity, test accuracy')
for r in imp['curve']:
  print(f"  {r['round']}  {r['sparsity']:.3f}  {r['test_accuracy']:.4f}")

# Two epochs: the temperature grows from 1 to 200 over a round's epochs
# (a one-epoch round would run at 200 from the start).
cs = search('configs/cs_fashion_mnist.py', '--config.cs.lambdas=(1e-6,)',
            '--config.cs.rounds=1', '--config.num_epochs=2')
for ticket in cs['tickets']:
  print(f"CS lambda {ticket['lambda']}: ticket sparsity "
        f"{ticket['sparsity']:.3f}, retrained test accuracy "
        f"{ticket['test_accuracy']:.4f}")
assert imp['complete'] and cs['complete']
assert abs(imp['curve'][-1]['sparsity'] - (1 - 0.8 ** 3)) < 0.01
