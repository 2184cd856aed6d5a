"""Tests for the model zoo `rigl_jax.experiment.models`."""

import functools

import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rigl_jax.experiment import models

_MNIST_SHAPE = (2, 28, 28, 1)
_CIFAR_SHAPE = (2, 32, 32, 3)
# Models meant for 28x28x1 inputs; every other image model gets 32x32x3.
_MNIST_MODELS = ('lenet_300_100', 'lenet5', 'mlp', 'small_cnn')
_BN_MODELS = ('resnet18', 'resnet20', 'resnet34', 'resnet50', 'resnet101',
              'wrn_22_8', 'wrn_22_2', 'wrn_16_4', 'wrn_28_10', 'mobilenet_v1',
              'mobilenet_v2')
_IMAGE_MODELS = _BN_MODELS + _MNIST_MODELS


def _flat(tree) -> dict[str, jax.Array]:
  return flax.traverse_util.flatten_dict(tree, sep='/')


def _abstract_params(model, shape, dtype=jnp.float32) -> dict[str, jax.Array]:
  """Param shapes from `jax.eval_shape`, without initialising anything."""
  variables = jax.eval_shape(
      lambda: model.init(jax.random.PRNGKey(0), jnp.zeros(shape, dtype),
                         train=False))
  return _flat(variables['params'])


def _count(params: dict[str, jax.Array]) -> int:
  return sum(int(np.prod(p.shape)) for p in params.values())


def _input_shape(name: str) -> tuple[int, ...]:
  return _MNIST_SHAPE if name in _MNIST_MODELS else _CIFAR_SHAPE


def _init(model, x, **kwargs):
  return jax.jit(functools.partial(model.init, train=False, **kwargs))(
      jax.random.PRNGKey(0), x)


def _synthetic_variables(model, x):
  """The model's variable shapes, filled from numpy instead of `init`.

  Compiling `init` of a deep model (mostly its per-parameter RNG) costs ~10 s
  on a 2-core CPU; the initialisers are tested on small instances instead.

  Args:
    model: a flax module.
    x: an example input.

  Returns:
    Variables with unit BatchNorm scales and running variances, zero biases and
    running means, and N(0, 1 / fan_in) kernels.
  """
  abstract = jax.eval_shape(
      functools.partial(model.init, train=False), jax.random.PRNGKey(0), x)
  rng = np.random.default_rng(0)

  def fill(path, leaf):
    name = path[-1].key
    if name in ('scale', 'var'):
      return np.ones(leaf.shape, leaf.dtype)
    if name in ('bias', 'mean'):
      return np.zeros(leaf.shape, leaf.dtype)
    fan_in = np.prod(leaf.shape[:-1])
    return (rng.normal(size=leaf.shape) / np.sqrt(fan_in)).astype(leaf.dtype)

  return jax.tree_util.tree_map_with_path(fill, abstract)


def _train_and_eval(model, variables, x):
  """(logits, updates) of a train=True and of a train=False apply."""

  @jax.jit
  def run(variables, x):
    return tuple(
        model.apply(variables, x, train=train, mutable=['batch_stats'])
        for train in (True, False))

  return run(variables, x)


@pytest.mark.parametrize('name, num_classes, shape, expected', [
    # torchvision's counts.
    ('resnet18', 1000, (1, 224, 224, 3), 11_689_512),
    ('resnet50', 1000, (1, 224, 224, 3), 25_557_032),
    ('resnet101', 1000, (1, 224, 224, 3), 44_549_160),
    # 784*300+300 + 300*100+100 + 100*10+10.
    ('lenet_300_100', 10, _MNIST_SHAPE, 266_610),
    # (25*20+20) + (25*20*50+50) + (4*4*50*500+500) + (500*10+10).
    ('lenet5', 10, _MNIST_SHAPE, 431_080),
])
def test_exact_param_counts(name, num_classes, shape, expected):
  model = models.get_model(name, num_classes=num_classes)
  assert _count(_abstract_params(model, shape)) == expected


@pytest.mark.parametrize('name, num_classes, expected, rel', [
    ('mobilenet_v1', 1000, 4_231_976, 0.02),  # Keras, trainable params.
    ('mobilenet_v2', 1000, 3_504_872, 0.02),  # Keras, trainable params.
    ('wrn_22_8', 10, 17_158_106, 0.01),
    ('wrn_28_10', 10, 36_479_194, 0.01),  # 36.5M in Zagoruyko & Komodakis.
])
def test_approximate_param_counts(name, num_classes, expected, rel):
  model = models.get_model(name, num_classes=num_classes)
  count = _count(_abstract_params(model, (1, 224, 224, 3)))
  assert count == pytest.approx(expected, rel=rel)


def test_char_lstm_param_count_matches_hand_count():
  vocab, embed, hidden = 98, 128, 512
  model = models.get_model('char_lstm', num_classes=vocab)
  params = _abstract_params(model, (1, 5), jnp.int32)
  layer0 = embed * 4 * hidden + hidden * 4 * hidden + 4 * hidden
  layer1 = hidden * 4 * hidden + hidden * 4 * hidden + 4 * hidden
  expected = vocab * embed + layer0 + layer1 + hidden * vocab + vocab
  assert _count(params) == expected


@pytest.mark.parametrize('name', sorted(models.MODELS))
def test_leaf_paths_and_kernel_ranks(name):
  """Readable paths: a named first layer and `head`; 2-D/4-D kernels."""
  tokens = name in ('char_lstm', 'transformer_lm')
  shape, dtype = ((1, 5), jnp.int32) if tokens else (_input_shape(name),
                                                     jnp.float32)
  kwargs = {'patch_size': 4} if name == 'vit' else {}
  params = _abstract_params(models.get_model(name, num_classes=7, **kwargs),
                            shape, dtype)
  assert params['head/kernel'].shape[-1] == 7
  assert params['head/bias'].shape == (7,)
  first = {'char_lstm': 'embed/embedding', 'lenet_300_100': 'dense0/kernel',
           'mlp': 'dense0/kernel', 'transformer_lm': 'embed/embedding',
           'vit': 'patch_embed/kernel'}.get(name, 'conv_init/kernel')
  assert first in params
  # Convolution kernels are (H, W, Cin, Cout); dense and LSTM ones (in, out);
  # attention ones (d, heads, head_dim) and (heads, head_dim, d).
  kernels = {p: v for p, v in params.items() if p.endswith('/kernel')}
  assert len(kernels) >= 3
  for path, kernel in kernels.items():
    want = 4 if 'conv' in path or 'patch' in path else (
        3 if '/attn/' in path else 2)
    assert kernel.ndim == want, path
  # Every module is named explicitly (no auto names such as `Dense_0`).
  assert not any(part[0].isupper() for p in params for part in p.split('/'))


# ResNet-101 repeats ResNet-50's bottleneck block (the longest compile):
# -m slow.
@pytest.mark.parametrize('name', [
    pytest.param(n, marks=pytest.mark.slow) if n == 'resnet101' else n
    for n in _IMAGE_MODELS])
def test_image_forward_and_batch_stats(name):
  model = models.get_model(name, num_classes=10)
  x = jax.random.normal(jax.random.PRNGKey(1), _input_shape(name))
  if name in _BN_MODELS:
    variables = _synthetic_variables(model, x)
  else:
    variables = _init(model, x)

  (logits, updates), (eval_logits, eval_updates) = _train_and_eval(
      model, variables, x)
  assert logits.shape == (2, 10)
  assert logits.dtype == jnp.float32
  assert np.all(np.isfinite(logits))
  assert eval_logits.shape == (2, 10)
  assert np.all(np.isfinite(eval_logits))

  if name in _BN_MODELS:
    old, new = _flat(variables['batch_stats']), _flat(updates['batch_stats'])
    assert old.keys() == new.keys()
    # Every BatchNorm moved its running variance (a mean can stay ~0, e.g.
    # after a linear layer fed by a BatchNorm output).
    variances = [p for p in old if p.endswith('/var')]
    assert len(variances) == len(old) // 2
    for path in variances:
      assert not np.allclose(old[path], new[path]), path
    assert _flat(eval_updates['batch_stats']).keys() == old.keys()
    for path, value in _flat(eval_updates['batch_stats']).items():
      np.testing.assert_array_equal(value, old[path])
    # Running averages (eval) and batch statistics (train) differ.
    assert not np.allclose(logits, eval_logits)
  else:
    assert set(variables) == {'params'}
    assert not updates and not eval_updates
    np.testing.assert_allclose(logits, eval_logits, rtol=1e-6)


def test_char_lstm_forward_is_causal_and_differentiable():
  vocab = 11
  model = models.get_model('char_lstm', num_classes=vocab, hidden_size=16,
                           embed_dim=8)
  tokens = jax.random.randint(jax.random.PRNGKey(1), (2, 9), 0, vocab)
  variables = _init(model, tokens)
  params = _flat(variables['params'])
  assert set(variables) == {'params'}
  assert params['lstm0/input/kernel'].shape == (8, 64)
  assert params['lstm0/recurrent/kernel'].shape == (16, 64)
  assert params['lstm1/input/kernel'].shape == (16, 64)
  assert params['embed/embedding'].shape == (vocab, 8)

  def loss(p, tokens):
    logits = model.apply({'params': p}, tokens, train=True)
    return -jnp.mean(jax.nn.log_softmax(logits)[..., 0]), logits

  # Changing token 5 leaves the logits of steps 0..4 unchanged, not later ones.
  changed = tokens.at[:, 5].set((tokens[:, 5] + 1) % vocab)
  grad_fn = jax.jit(jax.grad(loss, has_aux=True))
  grads, logits = grad_fn(variables['params'], tokens)
  _, other = grad_fn(variables['params'], changed)
  assert logits.shape == (2, 9, vocab)
  assert np.all(np.isfinite(logits))
  np.testing.assert_allclose(other[:, :5], logits[:, :5], rtol=1e-6)
  assert not np.allclose(other[:, 5:], logits[:, 5:])

  grads = _flat(grads)
  for path in ('lstm0/input/kernel', 'lstm0/recurrent/kernel',
               'lstm1/recurrent/kernel', 'head/kernel'):
    assert np.all(np.isfinite(grads[path])) and np.any(grads[path] != 0), path


def test_lstm_cell_matches_hand_computed_step():
  cell = models.LSTMCell(features=1, forget_bias=1.0)
  params = {
      'input': {'kernel': jnp.array([[1.0, 2.0, 3.0, 4.0]])},
      'recurrent': {'kernel': jnp.array([[0.5, 0.5, 0.5, 0.5]]),
                    'bias': jnp.array([0.0, -1.0, 0.0, 0.0])},
  }
  carry = (jnp.array([[2.0]]), jnp.array([[1.0]]))
  (c, h), out = cell.apply({'params': params}, carry, jnp.array([[1.0]]))

  def sig(v):
    return 1 / (1 + np.exp(-v))

  # Pre-activations x @ W_in + h @ W_rec + b, plus forget_bias on f.
  i, f, g, o = 1.5, 1.5 + 1.0, 3.5, 4.5
  expected_c = sig(f) * 2.0 + sig(i) * np.tanh(g)
  np.testing.assert_allclose(c, [[expected_c]], rtol=1e-6)
  np.testing.assert_allclose(h, [[sig(o) * np.tanh(expected_c)]], rtol=1e-6)
  np.testing.assert_array_equal(out, h)


def test_resnet_default_initialisation():
  """He normal (fan_out) convs, N(0, 0.01) head, BN gammas at one."""
  model = models.ResNet(stage_sizes=(1,), block_cls=models.resnet.ResNetBlock,
                        num_classes=1000, num_filters=64)
  params = _flat(_init(model, jnp.zeros(_CIFAR_SHAPE))['params'])
  np.testing.assert_allclose(
      np.std(params['conv_init/kernel']), np.sqrt(2 / (7 * 7 * 64)), rtol=0.05)
  np.testing.assert_allclose(
      np.std(params['stage1_block0/conv1/kernel']), np.sqrt(2 / (3 * 3 * 64)),
      rtol=0.05)
  np.testing.assert_allclose(np.std(params['head/kernel']), 0.01, rtol=0.05)
  np.testing.assert_array_equal(params['head/bias'], 0.0)
  # zero_init_residual defaults to False.
  np.testing.assert_array_equal(params['stage1_block0/bn2/scale'], 1.0)


@pytest.mark.parametrize('block_cls, last_bn', [
    (models.resnet.ResNetBlock, 'bn2'),
    (models.resnet.BottleneckResNetBlock, 'bn3'),
])
def test_resnet_zero_init_residual(block_cls, last_bn):
  model = models.ResNet(stage_sizes=(2,), block_cls=block_cls,
                        num_classes=10, num_filters=4, zero_init_residual=True)
  params = _flat(_init(model, jnp.zeros(_CIFAR_SHAPE))['params'])
  last_scales = [p for p in params if p.endswith(f'/{last_bn}/scale')]
  assert len(last_scales) == 2
  for path in last_scales:
    np.testing.assert_array_equal(params[path], 0.0)
  # Only the last BN of the residual branch starts at zero.
  other_scales = [p for p in params
                  if p.endswith('/scale') and p not in last_scales]
  assert 'bn_init/scale' in other_scales
  assert 'stage1_block0/bn1/scale' in other_scales
  for path in other_scales:
    np.testing.assert_array_equal(params[path], 1.0)


def test_resnet50_structure():
  params = _abstract_params(models.get_model('resnet50', num_classes=1000),
                            (1, 224, 224, 3))
  assert params['conv_init/kernel'].shape == (7, 7, 3, 64)
  assert 'conv_init/bias' not in params
  assert params['stage1_block0/conv3/kernel'].shape == (1, 1, 64, 256)
  assert params['stage1_block0/proj_conv/kernel'].shape == (1, 1, 64, 256)
  assert 'stage1_block1/proj_conv/kernel' not in params
  assert params['stage4_block2/conv2/kernel'].shape == (3, 3, 512, 512)
  assert params['head/kernel'].shape == (2048, 1000)
  assert {p.split('/')[0] for p in params if p.startswith('stage3_')} == {
      f'stage3_block{j}' for j in range(6)}


def test_wide_resnet_structure():
  params = _abstract_params(models.get_model('wrn_22_8', num_classes=10),
                            _CIFAR_SHAPE)
  assert params['conv_init/kernel'].shape == (3, 3, 3, 16)
  assert params['stage1_block0/proj_conv/kernel'].shape == (1, 1, 16, 128)
  assert params['stage3_block2/conv2/kernel'].shape == (3, 3, 512, 512)
  assert params['head/kernel'].shape == (512, 10)
  blocks = {p.split('/')[0] for p in params if p.startswith('stage')}
  assert len(blocks) == 3 * 3  # (22 - 4) / 6 blocks in each of 3 stages.
  with pytest.raises(ValueError, match='6n \\+ 4'):
    _abstract_params(models.WideResNet(depth=20, width=1, num_classes=10),
                     _CIFAR_SHAPE)


@pytest.mark.parametrize('name, alpha, first, last, first_dw', [
    ('mobilenet_v1', 0.5, 16, 512, 'block1/dw_conv/kernel'),
    ('mobilenet_v1', 1.0, 32, 1024, 'block1/dw_conv/kernel'),
    # The last conv keeps 1280 filters unless alpha > 1.
    ('mobilenet_v2', 0.5, 16, 1280, 'block0/dw_conv/kernel'),
    ('mobilenet_v2', 1.4, 48, 1792, 'block0/dw_conv/kernel'),
])
def test_mobilenet_width_multiplier(name, alpha, first, last, first_dw):
  model = models.get_model(name, num_classes=1000, width_multiplier=alpha)
  params = _abstract_params(model, _CIFAR_SHAPE)
  assert params['conv_init/kernel'].shape == (3, 3, 3, first)
  assert params['head/kernel'].shape == (last, 1000)
  # A depthwise kernel holds one 3x3 filter per input channel.
  assert params[first_dw].shape == (3, 3, 1, first)


def test_mlp_and_small_cnn_are_configurable():
  mlp = _abstract_params(
      models.get_model('mlp', num_classes=10, hidden_sizes=(64, 32, 16)),
      _MNIST_SHAPE)
  assert [mlp[f'dense{i}/kernel'].shape for i in range(3)] == [
      (784, 64), (64, 32), (32, 16)]
  assert mlp['head/kernel'].shape == (16, 10)

  cnn = _abstract_params(
      models.get_model('small_cnn', num_classes=10, channels=(8, 12, 24),
                       hidden_size=0),
      _MNIST_SHAPE)
  assert cnn['conv_init/kernel'].shape == (3, 3, 1, 8)
  assert cnn['conv1/kernel'].shape == (3, 3, 8, 12)
  assert cnn['conv2/kernel'].shape == (3, 3, 12, 24)
  assert 'dense0/kernel' not in cnn
  assert cnn['head/kernel'].shape == (3 * 3 * 24, 10)  # 28 -> 14 -> 7 -> 3.


def test_low_precision_compute_keeps_float32_params_and_logits():
  model = models.get_model('small_cnn', num_classes=10, dtype=jnp.bfloat16)
  x = jnp.ones(_MNIST_SHAPE)
  variables = _init(model, x)
  assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(variables))
  logits = jax.jit(model.apply)(variables, x)
  assert logits.dtype == jnp.float32
  assert np.all(np.isfinite(logits))


def test_dropout_needs_rng_only_when_training():
  model = models.WideResNet(depth=10, width=1, num_classes=10,
                            dropout_rate=0.3)
  x = jnp.ones(_CIFAR_SHAPE)
  variables = _synthetic_variables(model, x)

  def train_logits(key):
    return model.apply(variables, x, train=True, mutable=['batch_stats'],
                       rngs={'dropout': key})[0]

  @jax.jit
  def run(rng):
    evals = [model.apply(variables, x, train=False) for _ in range(2)]
    return evals, jax.vmap(train_logits)(jax.random.split(rng))

  (a, b), (c, d) = run(jax.random.PRNGKey(2))
  np.testing.assert_array_equal(a, b)
  assert not np.allclose(c, d)


def test_unknown_name_raises_value_error_listing_valid_names():
  with pytest.raises(ValueError) as excinfo:
    models.get_model('resnet51', num_classes=10)
  message = str(excinfo.value)
  assert 'resnet51' in message
  for name in models.MODELS:
    assert name in message


def test_unknown_kwarg_raises_type_error():
  with pytest.raises(TypeError):
    models.get_model('mlp', num_classes=10, not_a_field=3)


def test_registry_names():
  assert set(models.MODELS) == {
      'resnet18', 'resnet20', 'resnet34', 'resnet50', 'resnet101', 'wrn_22_8',
      'wrn_22_2', 'wrn_16_4', 'wrn_28_10', 'mobilenet_v1', 'mobilenet_v2',
      'lenet_300_100', 'lenet5', 'mlp', 'small_cnn', 'char_lstm',
      'transformer_lm', 'vit'}
