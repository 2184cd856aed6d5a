"""Entry point: ``python main.py --config configs/default.py --workdir DIR``.

Hyperparameters live in the config; override any of them on the command line,
e.g. ``--config.sparsity.sparsity=0.95 --config.sparsity.method=set``.

Multi-host (GPU clusters, TPU pods): run the same command on every host with
``--multihost``; `jax.distributed.initialize` then reads the coordinator,
process count and index from the environment (TPU pods, SLURM, Open MPI, or
``JAX_COORDINATOR_ADDRESS``/``JAX_NUM_PROCESSES``/``JAX_PROCESS_ID``).

Exit codes: 0 done, 2 bad input (a flag, an unknown config field, config,
data, checkpoint) or NaN/Inf loss (one ``error:`` line,
`rigl_jax.experiment.cli`), 143 stopped by SIGTERM after saving a checkpoint.
"""

import os
import sys

from absl import app
from absl import flags
from absl import logging
import jax
from ml_collections import config_flags

from rigl_jax.experiment import cli
from rigl_jax.experiment import console
from rigl_jax.experiment import preemption
# Light: the config sections and the choice of search, not the drivers.
from rigl_jax.experiment import ticket_search
from rigl_jax.experiment import validation

FLAGS = flags.FLAGS
flags.DEFINE_string('workdir', None, 'Where checkpoints, metrics and '
                    'results.json are written; an existing run is resumed.')
config_flags.DEFINE_config_file('config', None, 'The experiment config.',
                                lock_config=True)
flags.DEFINE_bool('multihost', None, 'Call jax.distributed.initialize() '
                  'first. Default: when JAX_COORDINATOR_ADDRESS is set.')
flags.mark_flags_as_required(['config', 'workdir'])


def main(argv):
  if len(argv) > 1:
    cli.fail(f'unexpected argument(s) {argv[1:]}: main.py takes only flags '
             '(--config FILE --workdir DIR [--config.<field>=VALUE ...]); '
             'see --help')
  console.quiet_libraries()  # unless --verbosity asks for them
  multihost = FLAGS.multihost
  if multihost is None:
    multihost = bool(os.environ.get('JAX_COORDINATOR_ADDRESS'))
  if multihost:
    # Outside auto-detected clusters (TPU, SLURM, Open MPI), the process
    # count and index come from JAX_NUM_PROCESSES and JAX_PROCESS_ID.
    kwargs = {k: int(os.environ[v]) for k, v in (
        ('num_processes', 'JAX_NUM_PROCESSES'),
        ('process_id', 'JAX_PROCESS_ID')) if os.environ.get(v)}
    jax.config.update('jax_cpu_collectives_implementation', 'gloo')
    jax.distributed.initialize(**kwargs)
  logging.info('JAX process %d/%d, devices: %s', jax.process_index(),
               jax.process_count(), jax.devices())
  try:
    # A bad config fails here, in seconds, before the training loop and
    # TensorFlow (which clu and tfds load: ~5 s) are imported.
    validation.validate(FLAGS.config)
    console.import_tensorflow_quietly()
    if FLAGS.config.get('ticket_search') is not None:  # 'cs' or 'imp'
      results = ticket_search.run(FLAGS.config, FLAGS.workdir)
    else:
      from rigl_jax.experiment import train  # pylint: disable=g-import-not-at-top
      results = train.train_and_evaluate(FLAGS.config, FLAGS.workdir)
  except ValueError as e:  # bad config, data, checkpoint or NaN: one line
    print(f'error: {e}', file=sys.stderr)
    sys.exit(2)
  except preemption.Preempted as e:
    print(f'preempted: {e}', file=sys.stderr)
    sys.exit(143)
  for line in console.summary_lines(results, FLAGS.workdir):
    console.say(line)
  metric = next(k for k in ('test_bits_per_char', 'test_perplexity',
                            'test_accuracy') if k in results)
  print(f"{metric}={results[metric]:.4f} "
        f"global_sparsity={results['global_sparsity']:.4f} "
        f"steps={results['steps']} wall_time_s={results['wall_time_s']:.1f}")


if __name__ == '__main__':
  app.run(main, flags_parser=cli.parse_flags)
