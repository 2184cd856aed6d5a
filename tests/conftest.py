"""Suite-wide settings (XLA compiles fast, once) and the shared trained run.

Most of the suite's time is XLA:CPU compiling small programs. Two settings,
made before jax starts its backend so that they reach every test and every
subprocess a test starts (they inherit the environment):

* ``--xla_backend_optimization_level=1``: XLA compiles faster at -O1 (the
  setting `masked_init` uses for its one-time program). Not the older loop
  emitters (``--xla_cpu_use_fusion_emitters=false``, a third faster still):
  under them the tie-breaking property test selects wrong masks.
* A persistent compilation cache in a fresh temporary folder for this run
  of the suite: the many tests that train the same tiny run (and the
  ``main.py`` subprocesses) compile each program once instead of once per
  test. It starts empty, so it never carries programs between suite runs;
  pytest-xdist workers share it.

Set ``RIGL_JAX_TEST_XLA_DEFAULTS=1`` to test with XLA's defaults and no
cache instead.
"""

import atexit
import dataclasses
import fcntl
import json
import os
import pathlib
import shutil
import tempfile
from typing import Any, Callable

import pytest

_FAST_COMPILE = '--xla_backend_optimization_level=1'

if not os.environ.get('RIGL_JAX_TEST_XLA_DEFAULTS'):
  os.environ['XLA_FLAGS'] = ' '.join(
      filter(None, [os.environ.get('XLA_FLAGS', ''), _FAST_COMPILE]))
  if 'JAX_COMPILATION_CACHE_DIR' not in os.environ:
    _cache = tempfile.mkdtemp(prefix='rigl_jax_test_xla_cache_')
    atexit.register(shutil.rmtree, _cache, ignore_errors=True)
    os.environ['JAX_COMPILATION_CACHE_DIR'] = _cache
    # Every program: the small ones add up (~5% of the suite's time).
    os.environ['JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS'] = '0'


# The suite's longest tests (20-60 s each here: runs of main.py killed and
# resumed, the 8-device mesh, the benchmark smoke test), in this order
# before all others. pytest-xdist (`--dist worksteal`, pytest.ini) splits
# the tests in collection order; collected last, as their folders sort, one
# of them started when the other worker had little left and kept the suite
# running on one worker for up to a minute. The three tests that read the
# 8-device runs come first and together, so that they run on one worker
# (the other waited for the first to build the runs: 35 s).
_LONGEST_FIRST = (
    'tests/experiment/test_sharding.py::test_meshes_give',
    'tests/experiment/test_sharding.py::test_model_axis',
    'tests/experiment/test_sharding.py::test_checkpoint_from_8x1',
    'tests/experiment/test_reliability.py::test_sigkill',
    'tests/experiment/test_ticket_resume.py',
    'tests/analysis/test_benchmarks.py::test_sparse_step',
    'tests/core/test_properties.py',
    'tests/experiment/test_train.py::test_token_lm',
    'tests/experiment/test_train.py::test_default_run',
    'tests/core/test_srigl.py::test_constant_fan_in',
    'tests/core/test_granet.py',
    'tests/experiment/test_train.py::test_shakespeare_lstm',
    'tests/experiment/test_train.py::test_one_step_on_each_tfds',
    'tests/experiment/test_configs.py::test_every_model',
    'tests/experiment/test_tickets.py',
    'tests/experiment/test_multihost.py',
    'tests/experiment/test_sweep.py',
)


def pytest_collection_modifyitems(items):
  """Moves `_LONGEST_FIRST` to the front (a stable sort: the rest keep
  their order)."""
  def rank(item):
    return next((i for i, prefix in enumerate(_LONGEST_FIRST)
                 if item.nodeid.startswith(prefix)), len(_LONGEST_FIRST))

  items.sort(key=rank)


@pytest.fixture(scope='session')
def built_once(tmp_path_factory) -> Callable[[str, Callable], pathlib.Path]:
  """``built_once(name, build)``: a folder `build(path)` fills once per run.

  pytest-xdist runs a session fixture once per worker; what this returns
  builds the folder once for the whole run (the first worker to ask builds
  it under a file lock, the others wait and read it). A failed build leaves
  nothing behind, so the next worker to ask retries it.
  """
  root = tmp_path_factory.getbasetemp()
  if os.environ.get('PYTEST_XDIST_WORKER'):
    root = root.parent  # shared by every worker of this run

  def get(name: str, build: Callable[[pathlib.Path], None]) -> pathlib.Path:
    path, done = root / name, root / f'{name}.built'
    with open(root / f'{name}.lock', 'w', encoding='utf-8') as lock:
      fcntl.flock(lock, fcntl.LOCK_EX)
      if not done.exists():
        shutil.rmtree(path, ignore_errors=True)
        path.mkdir()
        try:
          build(path)
        except BaseException:
          shutil.rmtree(path, ignore_errors=True)
          raise
        done.touch()
    return path

  return get


@dataclasses.dataclass(frozen=True)
class TrainedRun:
  """A finished `tests.runs.tiny_config()` run (20 steps), trained once."""
  config: Any
  workdir: str
  results: dict

  def copy_to(self, path) -> str:
    """A private copy of the run's workdir, for tests that write to it."""
    return shutil.copytree(self.workdir, str(path))


@pytest.fixture(scope='session')
def trained_run(built_once) -> TrainedRun:
  """One tiny trained run, shared by the export, resume and report tests.

  Read-only: a test that resumes or rewrites the run works on
  ``trained_run.copy_to(tmp_path / ...)``.
  """
  # The experiment system's extras; the core-only venv never asks for this.
  from rigl_jax.experiment import train  # pylint: disable=g-import-not-at-top
  from tests.runs import tiny_config  # pylint: disable=g-import-not-at-top
  config = tiny_config()
  workdir = str(built_once(
      'trained_run', lambda path: train.train_and_evaluate(config, str(path))))
  with open(os.path.join(workdir, 'results.json'), encoding='utf-8') as f:
    results = json.load(f)
  return TrainedRun(config=config, workdir=workdir, results=results)
