"""A small Vision Transformer on the bundled Fashion-MNIST, CPU-sized.

28x28 images cut into 7x7 patches (16 tokens and a class token), 4
pre-norm blocks of width 64 (4 heads, MLP 128), scanned and declared to
`sparsify` as stacked layers, so every block is its own layer for ERK, the
drop/grow counts and top-k. Attention, MLP, patch-embedding and head
kernels are sparse; biases, norms, the position embedding and the class
token dense (the core's default rule). AdamW with a cosine learning rate,
5% warm-up and gradient clipping at 1.0 as big_vision trains ViTs
(big_vision/configs/vit_i1k.py: lr 1e-3, clip 1.0; decoupled weight decay
on kernels only), 3 epochs of batch 128 (1,407 steps): a few minutes here.

Usage:
  python main.py --config configs/cpu_vit_fashion_mnist.py:method=rigl,dist=erk,sparsity=0.9 --workdir DIR
  # unrolled blocks (same initial weights and masks): --config.model.kwargs.scan_layers=False
  # bf16 computation (fp32 params, state and masks): --config.model.dtype=bfloat16
"""

from configs import default
from configs import paper


def get_config(arg: str | None = None):
  a = paper.parse(arg, method='rigl', dist='erk', sparsity='0.9', mult='1')
  config = default.get_config()
  config.model.name = 'vit'
  config.model.kwargs = {'patch_size': 7, 'embed_dim': 64, 'num_layers': 4,
                         'num_heads': 4, 'mlp_dim': 128, 'pool': 'cls',
                         'scan_layers': True}
  config.num_epochs = 3.0
  config.log_every_steps = 100
  config.training_multiplier = a['mult']
  config.sparsity = paper.sparsity_config(
      a['method'], a['dist'], a['sparsity'], update_freq=100,
      first_layer=None)
  opt = config.optimizer
  opt.name = 'adamw'
  opt.learning_rate = 1e-3
  opt.weight_decay = 0.05
  opt.label_smoothing = 0.0
  opt.schedule = 'cosine'
  opt.warmup_fraction = 0.05
  opt.grad_clip_norm = 1.0
  return config
