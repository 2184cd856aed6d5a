"""The glibc allocator setting that sparse steps apply on CPU."""

import os
import platform
import subprocess
import sys

import pytest

from rigl_jax import cpu_allocator


@pytest.mark.skipif(not sys.platform.startswith('linux')
                    or platform.libc_ver()[0] != 'glibc',
                    reason='glibc only')
def test_takes_effect_on_glibc():
  assert cpu_allocator.keep_large_allocations_on_heap() is True


@pytest.mark.parametrize('bad', [0, -1, 2**31])
def test_bad_threshold(bad):
  with pytest.raises(ValueError, match='threshold_bytes'):
    cpu_allocator.keep_large_allocations_on_heap(bad)


_STEP = '''
import jax, jax.numpy as jnp, optax, rigl_jax
from rigl_jax import cpu_allocator
params = {'w': jnp.ones((8, 8))}
tx = rigl_jax.rigl(optax.sgd(0.1), sparsity=0.5, end_step=10)
params, state = rigl_jax.masked_init(tx, params)
jax.jit(tx.update)(params, state, params)
print('tuned', cpu_allocator.tune_for_cpu_steps())
'''


@pytest.mark.skipif(not sys.platform.startswith('linux')
                    or platform.libc_ver()[0] != 'glibc',
                    reason='glibc only')
@pytest.mark.parametrize('env,tuned', [(None, True), ('0', False)])
def test_a_sparse_step_tunes_the_allocator_unless_told_not_to(env, tuned):
  # The README's step (one program, lax.cond) keeps its scratch on the heap
  # without the user doing anything CPU-specific; the variable opts out.
  environ = dict(os.environ, JAX_PLATFORMS='cpu')
  environ.pop('RIGL_JAX_TUNE_CPU_ALLOCATOR', None)
  if env is not None:
    environ['RIGL_JAX_TUNE_CPU_ALLOCATOR'] = env
  out = subprocess.run([sys.executable, '-c', _STEP], env=environ,
                       capture_output=True, text=True, check=True).stdout
  assert f'tuned {tuned}' in out


def test_configure_false_stops_the_automatic_tuning(monkeypatch):
  monkeypatch.setitem(cpu_allocator._state, 'done', False)
  monkeypatch.setitem(cpu_allocator._state, 'automatic', True)
  assert cpu_allocator.configure(False) is False
  assert cpu_allocator.tune_for_cpu_steps() is False
