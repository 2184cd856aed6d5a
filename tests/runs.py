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
  return set_fields(config, overrides)


def set_fields(config, overrides):
  """Sets dotted fields (``{'sparsity.method': 'set'}``) in place."""
  for key, value in overrides.items():
    node = config
    *parents, leaf = key.split('.')
    for p in parents:
      node = node[p]
    node[leaf] = value
  return config


def tiny_transformer_config(name='transformer_lm', scan=True, steps=6,
                            **overrides):
  """A tiny scanned or unrolled transformer LM (Shakespeare) or ViT
  (Fashion-MNIST), a few steps with mask updates every 2 steps."""
  from configs import cpu_transformer_shakespeare  # pylint: disable=g-import-not-at-top
  from rigl_jax.experiment.data import default_data_config  # pylint: disable=g-import-not-at-top
  config = cpu_transformer_shakespeare.get_config()
  config.data.train_fraction = 0.02
  config.data.eval_batch_size = 512
  config.data.batch_size = 16
  config.model.kwargs = {'embed_dim': 16, 'num_layers': 2, 'num_heads': 2,
                         'mlp_dim': 32, 'max_len': 64, 'scan_layers': scan}
  if name == 'vit':
    config.data = default_data_config('fashion_mnist')
    config.data.train_fraction = 0.01
    config.data.batch_size = 16
    config.data.eval_batch_size = 500
    config.model.name = 'vit'
    config.model.kwargs = {'embed_dim': 16, 'num_layers': 2, 'num_heads': 2,
                           'mlp_dim': 32, 'patch_size': 14,
                           'scan_layers': scan}
  config.num_train_steps = steps
  config.sparsity.update_freq = 2
  config.log_every_steps = 1
  config.checkpoint_every_steps = 0
  return set_fields(config, overrides)
