"""SRigL and GraNet through the experiment system (`train_and_evaluate`)."""

import numpy as np
import pytest

import rigl_jax
from rigl_jax.methods import srigl
from tests.runs import tiny_config


@pytest.mark.slow  # ~25 s each; tests/core trains both in plain loops
@pytest.mark.parametrize('method', ['srigl', 'granet'])
def test_trains_to_its_sparsity(method, tmp_path):
  from rigl_jax.experiment import builders  # pylint: disable=g-import-not-at-top
  from rigl_jax.experiment import train  # pylint: disable=g-import-not-at-top
  config = tiny_config(steps=12, **{'sparsity.method': method,
                                    'sparsity.update_freq': 3,
                                    'sparsity.end_fraction': 1.0})
  result = train.train_and_evaluate(config, str(tmp_path))
  assert np.isfinite(result['test_loss'])
  assert result['global_sparsity'] == pytest.approx(0.9, abs=0.01)
  state, _ = builders.restore_train_state(config, str(tmp_path))
  masks = rigl_jax.get_masks(state.opt_state)
  if method == 'srigl':
    for name in ('dense0', 'dense1'):
      assert srigl.satisfies(np.asarray(masks[name]['kernel'])), name
