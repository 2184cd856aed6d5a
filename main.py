"""Entry point: ``python main.py --config configs/default.py --workdir DIR``.

Hyperparameters live in the config; override any of them on the command line,
e.g. ``--config.sparsity.sparsity=0.95 --config.sparsity.method=set``.
"""

import sys

from absl import app
from absl import flags
from absl import logging
import jax
from ml_collections import config_flags

from rigl_jax import train

FLAGS = flags.FLAGS
flags.DEFINE_string('workdir', None, 'Where checkpoints, metrics and '
                    'results.json are written; an existing run is resumed.')
config_flags.DEFINE_config_file('config', None, 'The experiment config.',
                                lock_config=True)
flags.mark_flags_as_required(['config', 'workdir'])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError('Too many command-line arguments.')
  logging.info('JAX devices: %s', jax.devices())
  try:
    results = train.train_and_evaluate(FLAGS.config, FLAGS.workdir)
  except ValueError as e:  # bad config, data or checkpoint: one clear line
    print(f'error: {e}', file=sys.stderr)
    sys.exit(2)
  metric = ('test_bits_per_char' if 'test_bits_per_char' in results
            else 'test_accuracy')
  print(f"{metric}={results[metric]:.4f} "
        f"global_sparsity={results['global_sparsity']:.4f} "
        f"steps={results['steps']} wall_time_s={results['wall_time_s']:.1f}")


if __name__ == '__main__':
  app.run(main)
