"""Every docstring example of the core runs (jax, optax and numpy alone)."""

import pytest

from tests import helpers_doctest


@pytest.mark.parametrize('name', helpers_doctest.modules(core=True))
def test_docstring_examples(name):
  helpers_doctest.run(name)
