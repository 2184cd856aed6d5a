"""A CPU-sized configs/shakespeare_lstm.py: 1 layer of 256 units, 2k steps.

Runs in a few minutes on 2 CPU cores; same arguments as the full config.
"""

from configs import shakespeare_lstm


def get_config(arg: str | None = None):
  config = shakespeare_lstm.get_config(arg)
  config.model.kwargs = {'embed_dim': 64, 'hidden_size': 256,
                         'num_layers': 1}
  config.data.seq_len = 64
  config.num_train_steps = 2000
  config.log_every_steps = 200
  return config
