"""Shared pieces for tests that run the experiment system (needs its extras)."""

from configs import default as default_config


def tiny_config(steps=20, **overrides):
  """The default config, cut to a few seconds of training on a 5% split."""
  config = default_config.get_config()
  config.data.train_fraction = 0.05
  config.data.eval_batch_size = 500
  config.model.kwargs.hidden_sizes = (64, 32)
  config.num_train_steps = steps
  config.sparsity.update_freq = 5
  config.log_every_steps = 5
  config.checkpoint_every_steps = 10
  for key, value in overrides.items():
    node = config
    *parents, leaf = key.split('.')
    for p in parents:
      node = node[p]
    node[leaf] = value
  return config
