"""Config validation: every bad field is one clear error naming it."""

import pytest

from configs import default as default_config
from rigl_jax.experiment import validation

# (field, bad value, text the message must contain).
CASES = [
    ('seed', -1, 'an integer >= 0'),
    ('num_epochs', 0, 'a number in (0, inf]'),
    ('log_every_steps', 0, 'an integer >= 1'),
    ('checkpoint_every_steps', 2.5, 'an integer >= 0'),
    ('keep_checkpoints', 0, 'an integer >= 1'),
    ('on_nonfinite', 'ignore', "one of ['stop', 'skip']"),
    ('tune_cpu_allocator', 'yes', 'True or False'),
    ('data.name', 'svhn', "'fashion_mnist'"),
    ('data.source', 'http', "one of ['bundled', 'tfds']"),
    ('data.batch_size', 0, 'an integer >= 1'),
    ('data.train_fraction', 1.5, 'a number in (0, 1]'),
    ('model.name', 'resnet2', "'resnet50'"),
    ('model.kwargs', 3, 'a dict'),
    ('sparsity.method', 'lottery', "'rigl'"),
    ('sparsity.sparsity', 1.0, 'a number in [0, 1)'),
    ('sparsity.distribution', 'gauss', "one of ['uniform', 'erk', 'er']"),
    ('sparsity.update_freq', 0, 'an integer >= 1'),
    ('sparsity.drop_fraction', -0.1, 'a number in [0, 1]'),
    ('sparsity.drop_fraction_schedule', 'linear', "'exponential_K' (K > 0)"),
    ('sparsity.structure', '4:2', "'N:M' with 0 < N < M"),
    ('sparsity.is_sparse', 3, 'a list of path regexes'),
    ('optimizer.name', 'lamb', "one of ['sgd', 'adam', 'adamw']"),
    ('optimizer.learning_rate', -1.0, 'a number in (0, inf]'),
    ('optimizer.momentum', 1.0, 'a number in [0, 1)'),
    ('optimizer.schedule', 'linear', "one of ['cosine', 'step', 'constant', 'rsqrt']"),
    ('optimizer.step_decay_at', (0.5, 1.5), 'a list of numbers in (0, 1)'),
    ('mesh.data', 0, 'a positive integer or -1'),
    ('sharding.fsdp', 'no', 'True or False'),
    ('sharding.rules', ('kernel',), 'a list of (path regex'),
]


def _config_with(field, value):
  config = default_config.get_config().to_dict()
  node = config
  *parents, leaf = field.split('.')
  for p in parents:
    node = node[p]
  node[leaf] = value
  return config


def test_default_config_is_valid():
  validation.validate(default_config.get_config())
  validation.validate(_config_with('sparsity.drop_fraction_schedule',
                                   'exponential_2'))
  validation.validate(_config_with('sparsity.structure', '2:4'))


@pytest.mark.parametrize('field, value, allowed', CASES)
def test_bad_field_is_named_with_what_is_allowed(field, value, allowed):
  with pytest.raises(ValueError) as e:
    validation.validate(_config_with(field, value))
  msg = str(e.value)
  assert f'config.{field} = {value!r}' in msg and allowed in msg, msg
  assert '\n' not in msg


@pytest.mark.parametrize('field, needle', [
    ('sparsity.sparsty', "unknown config field sparsity.'sparsty'"),
    ('optimiser', "unknown config field 'optimiser'"),
])
def test_unknown_fields_are_refused_listing_valid_ones(field, needle):
  with pytest.raises(ValueError, match='valid') as e:
    validation.validate(_config_with(field, 1))
  assert needle in str(e.value)


def test_missing_required_field_and_end_before_begin():
  config = default_config.get_config().to_dict()
  config['sparsity']['method'] = None
  with pytest.raises(ValueError, match='config.sparsity.method is required'):
    validation.validate(config)
  config = _config_with('sparsity.end_step', 5)
  config['sparsity']['begin_step'] = 10
  with pytest.raises(ValueError, match='config.sparsity.end_step = 5'):
    validation.validate(config)
  config = _config_with('mesh', {'model': 2})
  with pytest.raises(ValueError, match="with a 'data' axis"):
    validation.validate(config)
