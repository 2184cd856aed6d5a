"""``python -m rigl_jax.deploy --workdir DIR``: see `rigl_jax.deploy.cli`."""

import sys

from rigl_jax.deploy import cli

sys.exit(cli.main())
