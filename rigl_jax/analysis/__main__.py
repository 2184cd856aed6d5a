"""``python -m rigl_jax.analysis --config FILE``: see `model_flops.report`."""

from rigl_jax.analysis import model_flops

model_flops.main()
