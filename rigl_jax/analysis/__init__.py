"""Analysis: FLOPs of sparse models and of sparse training, as the papers count.

`flops` holds the counting rules (jax, numpy and the core); `model_flops`
lists a Flax model's layers and reports a config's FLOPs
(``python -m rigl_jax.analysis --config FILE``).
"""
