"""Character-level LSTM language model, as in the RigL paper (Section 4.3).

The paper trains a 2-layer LSTM (embedding 128, 512 units) on WikiText-103
characters and reports bits per character at 75% and 90% sparsity: RigL
beats SET and Static and approaches pruning, while dense training stays
best (paper Figure 5). Here the corpus is the bundled Shakespeare plays
(90/5/5 split, 84 characters), so absolute numbers differ: the target is the
paper's ordering (bits/char, lower is better).

Setup: sequences of 128 characters, batch 64, Adam lr 1e-3 (no weight
decay), gradient clipping at norm 1, 75% sparsity by default, mask updates
every 100 steps until 75% of training, drop fraction 0.3 (cosine); all LSTM
and output kernels sparse, embedding dense.

Usage:
  python main.py --config configs/shakespeare_lstm.py:method=rigl,dist=uniform,sparsity=0.9 --workdir DIR
"""

from configs import default
from configs import paper


def get_config(arg: str | None = None):
  a = paper.parse(arg, method='rigl', dist='uniform', sparsity='0.75',
                  mult='1')
  config = default.get_config()
  config.data = default.default_data_config('shakespeare')
  config.model.name = 'char_lstm'
  config.model.kwargs = {'embed_dim': 128, 'hidden_size': 512,
                         'num_layers': 2}
  config.num_epochs = 10.0
  config.training_multiplier = a['mult']
  config.sparsity = paper.sparsity_config(
      a['method'], a['dist'], a['sparsity'], update_freq=100,
      first_layer=None)
  config.sparsity.is_sparse = ['kernel$']
  opt = config.optimizer
  opt.name = 'adam'
  opt.learning_rate = 1e-3
  opt.weight_decay = 0.0
  opt.label_smoothing = 0.0
  opt.schedule = 'cosine'
  opt.warmup_fraction = 0.01
  opt.grad_clip_norm = 1.0
  return config
