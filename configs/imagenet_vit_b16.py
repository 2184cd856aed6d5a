"""ViT-B/16 on ImageNet-2012 from scratch, sparse-trained (accelerators).

What it targets: sparse training of a ViT-B/16 (86.6M parameters) at the
budget of big_vision's from-scratch ImageNet recipe
(google-research/big_vision, big_vision/configs/vit_i1k.py, "How to train
your ViT", Steiner et al. 2021): batch 4096, 300 epochs, Adam with lr 1e-3
(10k warm-up steps, then cosine), gradient clipping at 1.0, weight decay
1e-4 scaled by the schedule (big_vision's ``wd``: here AdamW's decoupled
decay ``lr * 0.1`` = 1e-4 at the peak), class-token pooling, inception
crop and flip at 224. Dense reference for that recipe: 79.7% top-1 (the
paper's B/16 at 300 epochs with its "medium2" augmentation). This config
has no RandAugment, Mixup or the pre-logits layer (big_vision's
``rep_size=True``), so expect a lower dense accuracy: run the dense model
as the baseline of any comparison. The blocks are scanned
(``scan_layers=True``), declared to `sparsify` as stacked layers, and
computed in bfloat16 with float32 parameters, optimizer state and masks.

RigL here: ERK over the attention, MLP, patch-embedding and head kernels
(position embedding, class token, biases and norms dense), mask updates
every 100 steps until 75% of training, drop fraction 0.3 (cosine), as the
paper's ImageNet runs. No published sparse ViT number uses this exact
setup; the RigL paper has no transformer.

FLOPs: python -m rigl_jax.analysis --config configs/imagenet_vit_b16.py:sparsity=0.9
Sharding: heads and MLP units along the mesh's ``model`` axis, FSDP along
``data`` (``--config.mesh.model=...``, ``--config.sharding.fsdp=True``).

Usage (needs ImageNet prepared for tfds, and accelerators):
  python main.py --config configs/imagenet_vit_b16.py:method=rigl,dist=erk,sparsity=0.9 --workdir DIR
"""

from configs import default
from configs import paper

BATCH_SIZE = 4096  # vit_i1k.py: config.batch_size
EPOCHS = 300  # vit_i1k.py: config.total_epochs
WARMUP_STEPS = 10_000  # vit_i1k.py: config.schedule.warmup_steps
TRAIN_EXAMPLES = 1_281_167


def get_config(arg: str | None = None):
  a = paper.parse(arg, method='rigl', dist='erk', sparsity='0.9', mult='1')
  config = default.get_config()
  config.data = default.default_data_config('imagenet2012')
  config.data.batch_size = BATCH_SIZE
  config.model.name = 'vit'
  config.model.kwargs = {'patch_size': 16, 'embed_dim': 768,
                         'num_layers': 12, 'num_heads': 12, 'mlp_dim': 3072,
                         'pool': 'cls', 'scan_layers': True}
  config.model.dtype = 'bfloat16'
  steps = TRAIN_EXAMPLES * EPOCHS // BATCH_SIZE
  config.num_train_steps = steps
  config.training_multiplier = a['mult']
  config.sparsity = paper.sparsity_config(
      a['method'], a['dist'], a['sparsity'], update_freq=100,
      first_layer=None)
  opt = config.optimizer
  opt.name = 'adamw'
  opt.learning_rate = 1e-3  # vit_i1k.py: config.lr
  opt.weight_decay = 0.1  # x lr 1e-3 = big_vision's wd 1e-4
  opt.label_smoothing = 0.0
  opt.schedule = 'cosine'  # vit_i1k.py: decay_type='cosine'
  opt.warmup_fraction = WARMUP_STEPS / steps
  opt.grad_clip_norm = 1.0  # vit_i1k.py: config.grad_clip_norm
  config.log_every_steps = 50
  config.eval_every_steps = 2500
  config.checkpoint_every_steps = 1000
  return config
