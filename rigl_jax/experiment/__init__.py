"""The experiment system: configs in, trained runs out.

`train` (the loop), `checkpoints`, `validation` (config checks), `sharding`
(meshes), `data` (bundled and tfds datasets), `models` (the zoo) and
`ticket_search` (IMP and Continuous Sparsification drivers). It builds on the
core (`rigl_jax`) and on flax, ml_collections, clu, orbax and tfds; the core
never imports it.
"""
