"""Drop-fraction, update-step and pruning schedules (rigl_jax.schedules)."""

import math

import jax
import numpy as np
import pytest

from rigl_jax import schedules


def _df(t, schedule, begin=0, end=1000, alpha=0.3):
  return float(schedules.drop_fraction(t, initial=alpha, schedule=schedule,
                                       begin_step=begin, end_step=end))


def test_cosine_values():
  assert _df(0, 'cosine') == pytest.approx(0.3)
  assert _df(500, 'cosine') == pytest.approx(0.15)
  assert _df(250, 'cosine') == pytest.approx(0.15 * (1 + math.cos(math.pi / 4)))
  assert _df(1000, 'cosine') == pytest.approx(0.0, abs=1e-7)
  assert _df(5000, 'cosine') == pytest.approx(0.0, abs=1e-7)  # clipped


def test_constant_and_exponential():
  assert _df(0, 'constant') == _df(999, 'constant') == pytest.approx(0.3)
  # exponential_K: alpha * (1 - (t - begin) / (end - begin)) ** K
  assert _df(100, 'exponential_2', begin=100, end=1100) == pytest.approx(0.3)
  assert _df(600, 'exponential_2', begin=100, end=1100) == pytest.approx(
      0.3 * 0.25)
  assert _df(600, 'exponential', begin=100, end=1100) == pytest.approx(0.15)


def test_jit_compatible():
  f = jax.jit(lambda t: schedules.drop_fraction(
      t, initial=0.5, schedule='cosine', begin_step=0, end_step=100))
  np.testing.assert_allclose([float(f(t)) for t in (0, 50, 100)],
                             [0.5, 0.25, 0.0], atol=1e-6)


def test_update_steps():
  upd = [t for t in range(0, 60)
         if schedules.is_update_step(t, update_freq=10, begin_step=5,
                                     end_step=45)]
  assert upd == [5, 15, 25, 35]
  upd = [t for t in range(0, 60)
         if schedules.is_update_step(t, update_freq=10, begin_step=5,
                                     end_step=42, include_end=True)]
  assert upd == [5, 15, 25, 35, 42]


def test_pruning_cubic():
  f = lambda t: float(schedules.pruning_sparsity(
      t, initial_sparsity=0.0, final_sparsity=0.8, begin_step=100,
      end_step=300))
  assert f(0) == f(100) == 0.0
  assert f(200) == pytest.approx(0.8 + (0 - 0.8) * 0.5**3)
  assert f(300) == f(1000) == pytest.approx(0.8)


@pytest.mark.parametrize('name', ['linear', 'cosine_2', 'exponential_x', ''])
def test_bad_schedule_names(name):
  with pytest.raises(ValueError, match='valid choices'):
    schedules.parse_drop_fraction_schedule(name)
