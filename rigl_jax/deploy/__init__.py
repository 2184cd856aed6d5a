"""Deployment: trained sparse models as compact files, and inference on them.

`export` is the file format (numpy alone); `sparse_inference` runs an
exported model with scipy's sparse matrices; `cli` exports a finished run
from its checkpoint (``python -m rigl_jax.deploy --workdir DIR``), the one
module here that needs the experiment system.
"""
