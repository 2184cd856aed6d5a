"""A character-level decoder transformer on the bundled Shakespeare corpus.

Sized for 2 CPU cores (minutes): 4 pre-norm blocks of width 128 (4 heads,
MLP 512), sequences of 64 characters, batch 64, 2000 steps, Adam with a
cosine schedule and 1% warm-up, gradient clipping at norm 1, no weight
decay. The blocks are scanned (`scan_layers=True`: one stacked leaf per
block parameter), which the experiment system declares to `sparsify` as
stacked layers (`rigl_jax.experiment.models.stacked_leaves`), so every
block is its own layer for ERK, the drop/grow counts and top-k. Attention,
MLP, embedding and output kernels are sparse; biases, norms and the
position embedding dense.

Usage:
  python main.py --config configs/cpu_transformer_shakespeare.py:method=rigl,dist=erk,sparsity=0.9 --workdir DIR
  # unrolled blocks: --config.model.kwargs.scan_layers=False
"""

from configs import default
from configs import paper


def get_config(arg: str | None = None):
  a = paper.parse(arg, method='rigl', dist='erk', sparsity='0.8', mult='1')
  config = default.get_config()
  config.data = default.default_data_config('shakespeare')
  config.data.seq_len = 64
  config.model.name = 'transformer_lm'
  config.model.kwargs = {'embed_dim': 128, 'num_layers': 4, 'num_heads': 4,
                         'mlp_dim': 512, 'max_len': 64, 'scan_layers': True}
  config.num_train_steps = 2000
  config.log_every_steps = 200
  config.training_multiplier = a['mult']
  config.sparsity = paper.sparsity_config(
      a['method'], a['dist'], a['sparsity'], update_freq=100,
      first_layer=None)
  config.sparsity.is_sparse = ['(kernel|embedding)$']
  opt = config.optimizer
  opt.name = 'adam'
  opt.learning_rate = 1e-3
  opt.weight_decay = 0.0
  opt.label_smoothing = 0.0
  opt.schedule = 'cosine'
  opt.warmup_fraction = 0.01
  opt.grad_clip_norm = 1.0
  return config
