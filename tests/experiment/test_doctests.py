"""Every docstring example of the experiment system, deployment and analysis
runs."""

import pytest

from tests import helpers_doctest


@pytest.mark.parametrize('name', helpers_doctest.modules(core=False))
def test_docstring_examples(name):
  helpers_doctest.run(name)
