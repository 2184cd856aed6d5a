"""FLOPs accounting: hand-computed counts and the RigL paper's ResNet-50 figures."""

import importlib

import flax.linen as nn
import jax.numpy as jnp
import pytest

import rigl_jax
from rigl_jax.analysis import flops
from rigl_jax.analysis import model_flops
from rigl_jax.experiment import models


class _Tiny(nn.Module):
  """conv 3x3 (1->2 ch, stride 2) on 4x4 -> dense (8 -> 3)."""

  @nn.compact
  def __call__(self, x, train=False):
    x = nn.Conv(2, (3, 3), (2, 2), padding='SAME', name='conv')(x)
    x = x.reshape((x.shape[0], -1))
    return nn.Dense(3, name='head')(x)


def test_hand_computed_network():
  ops = model_flops.layer_ops(_Tiny(), (4, 4, 1))
  assert [o.path for o in ops] == ['conv/kernel', 'head/kernel']
  # conv: 2x2x2 = 8 outputs, fan-in 9; dense: 3 outputs, fan-in 8.
  # Each output costs 2*F*d + 1 (F*d mults + ReLU, F*d - 1 adds + bias).
  assert flops.inference_flops(ops) == 8 * (2 * 9 + 1) + 3 * (2 * 8 + 1)
  half = {'conv/kernel': 0.5, 'head/kernel': 0.75}
  assert flops.inference_flops(ops, half) == (8 * (2 * 4.5 + 1) +
                                              3 * (2 * 2 + 1))


def test_training_formulas():
  ops = model_flops.layer_ops(_Tiny(), (4, 4, 1))
  sp = {'conv/kernel': 0.5, 'head/kernel': 0.5}
  f_d, f_s = flops.inference_flops(ops), flops.inference_flops(ops, sp)
  kw = dict(total_steps=1010, update_freq=100)
  assert flops.training_flops('dense', ops, sp, **kw) == 3 * f_d * 1010
  assert flops.training_flops('static', ops, sp, **kw) == 3 * f_s * 1010
  assert flops.training_flops('set', ops, sp, **kw) == 3 * f_s * 1010
  assert flops.training_flops('snfs', ops, sp, **kw) == pytest.approx(
      (2 * f_s + f_d) * 1010)
  assert flops.training_flops('rigl', ops, sp, **kw) == pytest.approx(
      (3 * f_s * 100 + 2 * f_s + f_d) / 101 * 1010)
  # Pruning: dense before begin, final sparsity after end.
  p = flops.training_flops('pruning', ops, sp, total_steps=1000,
                           update_freq=100, begin_step=200, end_step=600)
  assert 3 * f_s * 1000 < p < 3 * f_d * 1000
  assert flops.training_flops('pruning', ops, sp, total_steps=1000,
                              update_freq=100, begin_step=0,
                              end_step=0) == pytest.approx(3 * f_s * 1000)
  with pytest.raises(ValueError, match='unknown sparse method'):
    flops.training_flops('lottery', ops, sp, **kw)
  # A method object counts by its training_cost: a new grow score is
  # charged like RigL unless it says otherwise.
  grow = rigl_jax.methods.DropAndGrow('mine', lambda w, g, a, k: abs(w))
  assert flops.training_flops(grow, ops, sp, **kw) == pytest.approx(
      flops.training_flops('rigl', ops, sp, **kw))
  sparse = rigl_jax.methods.DropAndGrow('mine', lambda w, g, a, k: abs(w),
                                        training_cost='sparse')
  assert flops.training_flops(sparse, ops, sp, **kw) == 3 * f_s * 1010
  with pytest.raises(ValueError, match='unknown training_cost'):
    rigl_jax.methods.DropAndGrow('mine', abs, training_cost='cheap')


def test_granet_is_its_pruning_schedule_plus_dense_gradients():
  ops = model_flops.layer_ops(_Tiny(), (4, 4, 1))
  sp = {'conv/kernel': 0.5, 'head/kernel': 0.5}
  f_d, f_s = flops.inference_flops(ops), flops.inference_flops(ops, sp)
  kw = dict(total_steps=1000, update_freq=100, begin_step=0, end_step=1000)
  got = flops.training_flops('granet', ops, sp, **kw)
  # Dense start; prunes over the first half of [0, 1000]: the pruning
  # method's cost with end_step 500, plus f_D - f(s_u) at each of the 10
  # updates (the dense gradient the regeneration ranks).
  level = lambda u: 1 - (1 - min(u, 500) / 500) ** 3
  extra = sum(f_d - (f_d + (f_s - f_d) * level(u)) for u in range(0, 1000,
                                                                    100))
  assert got == pytest.approx(flops.training_flops(
      'pruning', ops, sp, total_steps=1000, update_freq=100, begin_step=0,
      end_step=500) + extra)
  # A sparse start at 0.5 costs less (the layers start at their final 0.5).
  sparse = rigl_jax.methods.get_method('granet', granet_initial_sparsity=0.5)
  assert flops.training_flops(sparse, ops, sp, **kw) == pytest.approx(
      3 * f_s * 1000 + 10 * (f_d - f_s))


def test_lstm_counts_every_time_step():
  model = models.get_model('char_lstm', num_classes=10, embed_dim=4,
                           hidden_size=8, num_layers=1)
  ops = {o.path: o for o in model_flops.layer_ops(model, (5,),
                                            input_dtype=jnp.int32)}
  assert ops['lstm0/input/kernel'].repeats == 5
  assert ops['lstm0/recurrent/kernel'].kernel_shape == (8, 32)
  assert ops['head/kernel'].repeats == 5


@pytest.mark.parametrize('scan', [True, False])
@pytest.mark.parametrize('tied', [False, True])
def test_hand_computed_transformer(scan, tied):
  # 2 blocks of width 4 (2 heads of 2, MLP 8), vocabulary 5, 3 tokens.
  model = models.get_model('transformer_lm', num_classes=5, max_len=3,
                           embed_dim=4, num_layers=2, num_heads=2,
                           mlp_dim=8, scan_layers=scan, tie_embeddings=tied)
  ops = model_flops.layer_ops(model, (3,), input_dtype=jnp.int32)
  # Per block and example: Q, K, V and O: 3 positions x 4 outputs, each
  # 2*4 + 1; scores 2 heads x 3 x 3 x (2*2 - 1), softmax 3 per score,
  # weighted values 2 x 3 x 2 x (2*3 - 1); fc1 3 x 8 x (2*4 + 1); fc2
  # 3 x 4 x (2*8 + 1). Output layer (head, or the tied embedding):
  # 3 x 5 x (2*4 + 1). The token embedding is a lookup: nothing.
  block = 4 * 12 * 9 + (18 * 3 + 3 * 18 + 2 * 3 * 2 * 5) + 24 * 9 + 12 * 17
  assert block == 1020
  assert flops.inference_flops(ops) == 2 * block + 15 * 9
  kinds = sorted({o.kind for o in ops})
  assert kinds == ['attention', 'dense']
  out = 'embed/embedding' if tied else 'head/kernel'
  assert out in {o.path for o in ops}
  # Sparse kernels scale; the attention scores stay dense.
  q = [o.path for o in ops if o.path.endswith('query/kernel')]
  half = {p: 0.5 for p in q} | {out: 0.8}
  per_q = 12 * (2 * 2 + 1)  # fan-in 4 at density 0.5
  assert flops.inference_flops(ops, half) == pytest.approx(
      2 * (block - 12 * 9 + per_q) + 15 * (2 * 4 * 0.2 + 1))


def test_transformer_report_counts_stacked_layers_like_unrolled():
  config = importlib.import_module(
      'configs.cpu_transformer_shakespeare').get_config()
  scanned = model_flops.report(config)
  config.model.kwargs.scan_layers = False
  unrolled = model_flops.report(config)
  assert scanned['dense_inference_flops'] == unrolled[
      'dense_inference_flops']
  assert scanned['inference_ratio'] == pytest.approx(
      unrolled['inference_ratio'], rel=1e-4)
  assert 0.2 < scanned['inference_ratio'] < 0.5  # 80%, attention dense


# (distribution, sparsity, inference x, training x at 5x): the RigL paper's
# Table 2 and the official README (first conv dense for uniform and at 99%).
PAPER = [('erk', 0.8, 0.42, 2.09), ('uniform', 0.8, 0.23, 1.14),
         ('erk', 0.9, 0.24, 1.23), ('uniform', 0.9, 0.13, 0.66),
         ('erk', 0.95, 0.12, 0.63), ('uniform', 0.95, 0.08, 0.42),
         ('erk', 0.965, 0.09, 0.45), ('uniform', 0.965, 0.07, 0.34),
         ('erk', 0.99, 0.05, 0.29)]


@pytest.mark.parametrize('dist,sparsity,inference,train5x', PAPER)
def test_resnet50_reproduces_the_paper(dist, sparsity, inference, train5x):
  config = importlib.import_module('configs.imagenet_resnet50').get_config(
      f'method=rigl,dist={dist},sparsity={sparsity},mult=5')
  if sparsity == 0.99:
    config.sparsity.custom_sparsity = {'conv_init/kernel': 0.0}
  r = model_flops.report(config)
  assert r['dense_inference_flops'] == pytest.approx(8.2e9, rel=0.01)
  assert round(r['inference_ratio'], 2) == inference
  assert round(r['training_ratio']['rigl'], 2) == train5x
  if sparsity == 0.8:  # 1x RigL ~ inference FLOPs (README's 1x table)
    config.training_multiplier = 1.0
    assert round(model_flops.report(config)['training_ratio']['rigl'],
                 2) == inference


def test_sparsities_from_masks():
  masks = {'a': jnp.array([[True, False], [False, False]]), 'b': None}
  assert flops.sparsities_from_masks(masks) == {'a': 0.75}


def test_cli_bad_model_kwargs():
  config = importlib.import_module('configs.default').get_config()
  config.model.name = 'resnet18'
  with pytest.raises(ValueError, match='kwargs'):
    model_flops.report(config)
