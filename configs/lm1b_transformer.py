"""A token-level decoder transformer on One Billion Word (accelerators).

What it targets: sparse training of the Flax lm1b example's language model
at its budget (google/flax, examples/lm1b/configs/default.py and train.py):
6 pre-norm blocks of width 512 (8 heads, MLP 2048), sequences of 128
tokens, a 30,000-piece SentencePiece vocabulary trained on the first 10**7
characters of the train split, batch 256, 500,000 steps, AdamW with lr
0.0016 (1,000 linear warm-up steps, then lr * sqrt(1000 / step)), weight
decay 0.1, dropout 0.1, bfloat16 compute with float32 parameters. The
example's dense model reaches an eval loss of 3.127 nats per token
(perplexity 22.8) in 13 h on a TPU v3-8 (its README); run this config's
dense model as the baseline of any comparison, as the differences below
move it.

Differences from the Flax example: Adam's b2 and epsilon are optax's
defaults (0.999, 1e-8; the example uses 0.98, 1e-9); the examples are packed
into one token stream with an end-of-sentence id between them and cut into
windows of 128 (the example packs with segment ids and masks attention
across examples); weight decay skips biases, norms and position embeddings
(the example decays every parameter). The tokenizer and token files are
made on the first run (`rigl_jax.experiment.data.tfds_text`; minutes for
lm1b's 30M sentences) in ``config.data.token_dir``.

RigL here: ERK over the attention, MLP, embedding and output kernels (biases,
norms and the position embedding dense), mask updates every 100 steps until
75% of training, drop fraction 0.3 (cosine). The blocks are scanned and
declared to `sparsify` as stacked layers.

FLOPs: python -m rigl_jax.analysis --config configs/lm1b_transformer.py
Usage (needs lm1b prepared for tfds: `tfds build lm1b --data_dir=DIR`):
  python main.py --config configs/lm1b_transformer.py:method=rigl,dist=erk,sparsity=0.9 --workdir DIR --config.data.tfds_data_dir=DIR
"""

from configs import default
from configs import paper

STEPS = 500_000  # lm1b/configs/default.py: num_train_steps
WARMUP_STEPS = 1000  # lm1b/configs/default.py: warmup_steps


def get_config(arg: str | None = None):
  a = paper.parse(arg, method='rigl', dist='erk', sparsity='0.9', mult='1')
  config = default.get_config()
  config.data = default.default_data_config('lm1b')
  config.data.source = 'tfds'
  config.data.batch_size = 256  # 32 per device x 8 devices
  config.data.seq_len = 128  # max_target_length
  config.model.name = 'transformer_lm'
  config.model.kwargs = {'embed_dim': 512, 'num_layers': 6, 'num_heads': 8,
                         'mlp_dim': 2048, 'max_len': 128,
                         'dropout_rate': 0.1, 'scan_layers': True}
  config.model.dtype = 'bfloat16'
  config.num_train_steps = STEPS
  config.training_multiplier = a['mult']
  config.sparsity = paper.sparsity_config(
      a['method'], a['dist'], a['sparsity'], update_freq=100,
      first_layer=None)
  config.sparsity.is_sparse = ['(kernel|embedding)$']
  opt = config.optimizer
  opt.name = 'adamw'
  opt.learning_rate = 0.0016
  opt.weight_decay = 0.1
  opt.label_smoothing = 0.0
  opt.schedule = 'rsqrt'
  opt.warmup_fraction = WARMUP_STEPS / STEPS
  opt.grad_clip_norm = 0.0
  config.log_every_steps = 100
  config.eval_every_steps = 10_000
  config.checkpoint_every_steps = 10_000
  return config
