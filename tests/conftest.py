"""Suite-wide settings: XLA compiles for speed of compilation.

Most of the suite's time is XLA:CPU compiling small programs; at -O1 it
compiles them faster (the setting `masked_init` uses for its one-time
program). Not the older loop emitters (``--xla_cpu_use_fusion_emitters=false``,
a third faster still): under them the tie-breaking property test selects
wrong masks. Set before jax starts its
backend, so they reach every test and every subprocess a test starts that
inherits the environment. Set ``RIGL_JAX_TEST_XLA_DEFAULTS=1`` to test with
XLA's defaults instead.
"""

import os

_FAST_COMPILE = '--xla_backend_optimization_level=1'

if not os.environ.get('RIGL_JAX_TEST_XLA_DEFAULTS'):
  os.environ['XLA_FLAGS'] = ' '.join(
      filter(None, [os.environ.get('XLA_FLAGS', ''), _FAST_COMPILE]))
