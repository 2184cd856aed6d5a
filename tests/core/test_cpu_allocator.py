"""The glibc allocator setting used by the experiment system on CPU."""

import platform
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
