"""The paper configs hold the reference code's values (google-research/rigl).

Learning rates are computed by hand from the reference formulas:
`rigl/imagenet_resnet/imagenet_train_eval.py` (`lr_schedule`: lr 0.1 x
batch / 256 = 1.6 at batch 4096, times the multiplier of the last
(multiplier, start epoch) pair reached, epoch = step / (1281167 / 4096), a
linear warm-up to the first start, epochs x mult) and
`rigl/cifar_resnet/resnet_train_eval.py` (0.1 / 5**i after steps 30k, 60k,
90k, x mult). No data is loaded and no model is run.
"""

import importlib

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

import rigl_jax
from rigl_jax import distributions
from rigl_jax.experiment import models
from rigl_jax.experiment import optimizers
from rigl_jax.experiment import steps as steps_lib
from rigl_jax.experiment import validation
from rigl_jax.experiment.data import base as data_base

CONFIGS = ('imagenet_resnet50', 'imagenet_mobilenet_v1',
           'imagenet_mobilenet_v2', 'cifar10_wrn22_8')
STEPS_PER_EPOCH = 1_281_167 / 4096  # 312.78...


def _config(name, arg):
  return importlib.import_module(f'configs.{name}').get_config(arg)


def _lr(config, steps):
  total = steps_lib.num_train_steps(
      config, data_base.SPECS[config.data.name].num_train)
  fn = optimizers.create_learning_rate_fn(config, total)
  return [float(fn(s)) for s in steps]


@pytest.mark.parametrize('name', CONFIGS)
@pytest.mark.parametrize('arg', [
    'method=rigl,dist=erk,sparsity=0.8,mult=1',
    'method=set,dist=uniform,sparsity=0.9,mult=5',
    'method=pruning,dist=erk,sparsity=0.95,mult=2',
    'method=dense'])
def test_paper_configs_validate_with_the_reference_optimizer(name, arg):
  config = _config(name, arg)
  validation.validate(config)
  opt = config.optimizer
  assert (opt.name, opt.momentum, opt.nesterov) == ('sgd', 0.9, True)
  assert (opt.schedule, opt.warmup_fraction) == ('step', 0.0)
  cifar = name.startswith('cifar')
  assert opt.weight_decay == (5e-4 if cifar else
                              1e-4 if name.endswith('resnet50') else 4e-5)
  assert opt.label_smoothing == (0.0 if cifar else 0.1)
  assert config.data.batch_size == (128 if cifar else 4096)
  mult = config.training_multiplier
  assert steps_lib.num_train_steps(
      config, data_base.SPECS[config.data.name].num_train) == round(
          (97_656 if cifar else 32_000) * mult)


@pytest.mark.parametrize('mult,steps,expected', [
    # Epoch boundaries 30, 70, 90 at 312.78 steps per epoch: the first step
    # at or past 30 epochs is ceil(9383.55) = 9384, etc.; no warm-up.
    (1, (0, 9383, 9384, 21894, 21895, 28150, 28151, 31999),
     (1.6, 1.6, 0.16, 0.16, 0.016, 0.016, 0.0016, 0.0016)),
    # x5: epochs 150, 350, 450 -> steps 46917.7, 109474.7, 140753.2.
    (5, (0, 46917, 46918, 109474, 109475, 140753, 140754, 159999),
     (1.6, 1.6, 0.16, 0.16, 0.016, 0.016, 0.0016, 0.0016)),
])
def test_resnet50_learning_rate_is_the_reference_schedule(mult, steps,
                                                          expected):
  config = _config('imagenet_resnet50', f'mult={mult}')
  np.testing.assert_allclose(_lr(config, steps), expected, rtol=1e-5)


@pytest.mark.parametrize('version', [1, 2])
@pytest.mark.parametrize('mult,steps,expected', [
    # Warm-up over 8 epochs (2502.28 steps), then x1 until epoch 40 (step
    # 12511.4), x0.1 until 75 (23458.9), x0.01 until 95 (29714.6), x0.001.
    (1, (0, 1251, 2502, 2503, 12511, 12512, 23458, 23459, 29714, 29715,
         31999),
     (0.0, 1.6 * 1251 / (8 * STEPS_PER_EPOCH),
      1.6 * 2502 / (8 * STEPS_PER_EPOCH), 1.6, 1.6, 0.16, 0.16, 0.016,
      0.016, 0.0016, 0.0016)),
    # x5: warm-up over 40 epochs (12511.4 steps); then epochs 200, 375, 475.
    (5, (6000, 12511, 12512, 62556, 62557, 117294, 117295, 148572, 148573,
         159999),
     (1.6 * 6000 / (40 * STEPS_PER_EPOCH),
      1.6 * 12511 / (40 * STEPS_PER_EPOCH), 1.6, 1.6, 0.16, 0.16, 0.016,
      0.016, 0.0016, 0.0016)),
])
def test_mobilenet_learning_rate_is_the_reference_schedule(version, mult,
                                                           steps, expected):
  config = _config(f'imagenet_mobilenet_v{version}', f'mult={mult}')
  np.testing.assert_allclose(_lr(config, steps), expected, rtol=1e-5)


@pytest.mark.parametrize('mult,steps,expected', [
    # 0.1 / 5**i after steps 30k, 60k, 90k (x mult), no warm-up.
    (1, (0, 29999, 30001, 59999, 60001, 89999, 90001, 97655),
     (0.1, 0.1, 0.02, 0.02, 0.004, 0.004, 0.0008, 0.0008)),
    (5, (0, 149999, 150001, 299999, 300001, 449999, 450001, 488279),
     (0.1, 0.1, 0.02, 0.02, 0.004, 0.004, 0.0008, 0.0008)),
])
def test_cifar_learning_rate_is_the_reference_schedule(mult, steps, expected):
  config = _config('cifar10_wrn22_8', f'mult={mult}')
  np.testing.assert_allclose(_lr(config, steps), expected, rtol=1e-5)


@pytest.mark.parametrize('name,end_1x', [
    ('imagenet_resnet50', 25_000), ('imagenet_mobilenet_v1', 25_000),
    ('imagenet_mobilenet_v2', 25_000), ('cifar10_wrn22_8', 75_000)])
@pytest.mark.parametrize('method', ['rigl', 'set', 'snfs', 'static'])
@pytest.mark.parametrize('mult', [1, 5])
def test_mask_updates_every_100_steps_until_the_reference_end(
    name, end_1x, method, mult):
  sp = _config(name, f'method={method},mult={mult}').sparsity
  assert (sp.begin_step, sp.update_freq, sp.drop_fraction) == (0, 100, 0.3)
  assert sp.end_step == end_1x * mult
  assert steps_lib.end_step(sp, 1) == end_1x * mult


@pytest.mark.parametrize('mult', [1, 2])
def test_cifar_gradual_pruning_window(mult):
  sp = _config('cifar10_wrn22_8', f'method=pruning,mult={mult}').sparsity
  # Begin and end scale with mult, the frequency does not.
  assert (sp.begin_step, sp.end_step, sp.update_freq) == (
      20_000 * mult, 75_000 * mult, 1_000)


@pytest.mark.parametrize('dist,sparsity,dense', [
    ('uniform', 0.8, True), ('uniform', 0.99, True), ('erk', 0.8, False),
    ('erk', 0.95, False), ('erk', 0.99, True)])
def test_resnet50_first_conv(dist, sparsity, dense):
  sp = _config('imagenet_resnet50',
               f'dist={dist},sparsity={sparsity}').sparsity
  custom = sp.get('custom_sparsity')
  assert (custom.to_dict() if custom else {}) == (
      {'conv_init/kernel': 0.0} if dense else {})


@pytest.mark.parametrize('method', ['rigl', 'set', 'static', 'snfs',
                                    'pruning'])
@pytest.mark.parametrize('dist', ['uniform', 'erk'])
def test_cifar_first_conv_is_dense_for_every_method(method, dist):
  sp = _config('cifar10_wrn22_8', f'method={method},dist={dist}').sparsity
  assert sp.custom_sparsity.to_dict() == {'conv_init/kernel': 0.0}


def _param_shapes(config):
  model = models.get_model(config.model.name, num_classes=1000,
                           **config.model.kwargs)
  x = jax.ShapeDtypeStruct((1, 224, 224, 3), jnp.float32)
  return jax.eval_shape(
      lambda x: model.init(jax.random.PRNGKey(0), x, train=False),
      x)['params']


def _mobilenet(version, dist):
  """The config, its parameter shapes and per-leaf sparsities (with and
  without the config's custom sparsities)."""
  config = _config(f'imagenet_mobilenet_v{version}',
                   f'method=rigl,dist={dist},sparsity=0.9')
  shapes = _param_shapes(config)
  sp = config.sparsity

  def per_leaf(custom):
    return dict(rigl_jax.paths.flatten(distributions.sparsity_distribution(
        shapes, sp.sparsity, sp.distribution, custom_sparsity=custom))[0])

  return (config, shapes, per_leaf(sp.custom_sparsity.to_dict()),
          per_leaf(None))


@pytest.mark.parametrize('version', [1, 2])
@pytest.mark.parametrize('dist', ['uniform', 'erk'])
def test_mobilenet_first_conv_and_depthwise_kernels_are_dense(version, dist):
  _, _, ours, free = _mobilenet(version, dist)
  kernels = [p for p in ours if p.endswith('kernel')]
  depthwise = [p for p in kernels if '/dw_conv/' in p]
  assert len(depthwise) == (13 if version == 1 else 17)
  kept_dense = ['conv_init/kernel'] + depthwise
  assert all(ours[p] == 0.0 for p in kept_dense)
  assert ours['head/kernel'] > 0.5  # the classifier is sparse
  if dist == 'uniform':  # without the rule, every kernel would be sparse
    assert all(free[p] == 0.9 for p in kernels)
    assert {p for p in kernels if ours[p] > 0} == set(kernels) - set(
        kept_dense)


# Drawing the random masks of 3-4M weights compiles for seconds on 2 cores:
# one case in the default suite.
@pytest.mark.parametrize('version,dist', [
    (2, 'erk'), pytest.param(1, 'uniform', marks=pytest.mark.slow)])
def test_mobilenet_masks_of_the_built_transform(version, dist):
  """The masks of the transform the experiment builds from the config (on
  zero params; no model is run) hold the zeros of the per-leaf
  sparsities."""
  config, shapes, ours, _ = _mobilenet(version, dist)
  params = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)
  tx = optimizers.create_optimizer(config, 1000, lambda step: 0.1)
  masks = dict(rigl_jax.paths.flatten(rigl_jax.get_masks(tx.init(params)))[0])
  kernels = [p for p in ours if p.endswith('kernel')]
  assert all(masks[p] is not None for p in kernels)
  for path in kernels:
    zeros = int(np.sum(~np.asarray(masks[path])))
    assert zeros == distributions.num_zeros(masks[path].shape, ours[path])
    assert (zeros == 0) == (ours[path] == 0.0), path
  dense = [p for p in kernels if '/dw_conv/' in p or p == 'conv_init/kernel']
  assert all(not np.any(~np.asarray(masks[p])) for p in dense)


def test_step_multipliers_are_validated_with_one_clear_error():
  config = _config('cifar10_wrn22_8', None)
  bad = config.to_dict()
  bad['optimizer']['step_multipliers'] = ((1.0, 0), (0.1, 30), (0.01, 20))
  with pytest.raises(ValueError, match='non-decreasing starts'):
    validation.validate(bad)
  bad['optimizer']['step_multipliers'] = ((0.0, 0),)
  with pytest.raises(ValueError, match=r'multiplier > 0'):
    validation.validate(bad)
  for field, value in (('schedule', 'cosine'), ('warmup_fraction', 0.05)):
    bad = config.to_dict()
    bad['optimizer'][field] = value
    with pytest.raises(ValueError) as e:
      validation.validate(bad)
    assert "config.optimizer.step_multipliers = " in str(e.value)
    assert "unless optimizer.schedule is 'step'" in str(e.value)
    with pytest.raises(ValueError, match='step_multipliers needs'):
      optimizers.create_learning_rate_fn(ml_collections.ConfigDict(bad), 10)
  # A config read back from JSON holds lists.
  ok = config.to_dict()
  ok['optimizer']['step_multipliers'] = [[1.0, 0], [0.2, 30000]]
  validation.validate(ok)
