"""Default experiment: RigL at 90% sparsity (ERK) on Fashion-MNIST.

Runs on a 2-core CPU with no internet (the data ships with rigl_jax).
Override fields on the command line, e.g.
  python main.py --config configs/default.py --workdir /tmp/run \
      --config.sparsity.method=set --config.sparsity.sparsity=0.95
"""

import ml_collections

from rigl_jax.experiment.data import default_data_config


def get_config() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.seed = 0

  config.data = default_data_config('fashion_mnist')
  config.data.batch_size = 128

  config.model = ml_collections.ConfigDict()
  config.model.name = 'mlp'
  config.model.kwargs = ml_collections.ConfigDict(
      {'hidden_sizes': (1024, 1024)})
  # Computation dtype: 'bfloat16' computes activations and gradients in
  # bf16; parameters, optimizer state, masks and mask scores stay float32.
  config.model.dtype = 'float32'

  # Fields of rigl_jax.sparsify; see rigl_jax.CONFIG_FIELDS.
  config.sparsity = ml_collections.ConfigDict()
  config.sparsity.method = 'rigl'
  config.sparsity.sparsity = 0.9
  config.sparsity.distribution = 'erk'
  config.sparsity.update_freq = 100
  config.sparsity.begin_step = 0
  config.sparsity.end_step = ml_collections.config_dict.placeholder(int)
  config.sparsity.end_fraction = 0.75  # end_step = 75% of training if unset
  config.sparsity.drop_fraction = 0.3
  config.sparsity.drop_fraction_schedule = 'cosine'
  # 'unstructured', or 'N:M' (e.g. '2:4' with sparsity 0.5): N nonzeros in
  # every group of M inputs; drops and growths keep the structure.
  config.sparsity.structure = 'unstructured'
  # Initial random masks; None: config.seed.
  config.sparsity.seed = ml_collections.config_dict.placeholder(int)
  # Which leaves are sparse (None: kernels and embeddings; or path regexes,
  # e.g. --config.sparsity.is_sparse="('conv', 'dense')"), per-leaf fixed
  # sparsities ({path regex: sparsity}; 0.0 keeps a layer dense) and stacked
  # layers ({path regex: axis}, e.g. nn.scan blocks).
  config.sparsity.is_sparse = ml_collections.config_dict.placeholder(object)
  config.sparsity.custom_sparsity = ml_collections.config_dict.placeholder(
      object)
  config.sparsity.stacked = ml_collections.config_dict.placeholder(object)
  config.sparsity.erk_power_scale = 1.0
  # 'reference': the official code's ERK zero budget and per-layer zero
  # counts (floor(s * N_l)), for its masks bit for bit.
  config.sparsity.sparsity_budget = 'exact'
  # sparsify's leak check (a host callback on each mask update, which keeps
  # JAX's persistent compilation cache from storing the step): off, because
  # the experiment's optimizer has sparsify as its last transformation
  # (rigl_jax/experiment/optimizers.py), so no later one can leak.
  config.sparsity.check_leaks = False
  # Method hyperparameters (each method reads its own).
  # What new connections start at: 'zeros', 'random_normal', 'random_uniform'
  # (RigL also 'grad_scale', 'grad_sign'), each optionally '_K'-divided.
  config.sparsity.grow_init = 'zeros'
  # Noise on the drop scores |w| (the reference's tie-breaker); 0: none.
  config.sparsity.noise_std = 1e-5
  # RigL: momentum of new connections = this x the gradient (0: zeros).
  config.sparsity.rigl_acc_scale = 0.0
  config.sparsity.snfs_momentum = 0.9
  config.sparsity.snfs_redistribution = False
  config.sparsity.pruning_scope = 'layer'
  config.sparsity.pruning_initial_sparsity = 0.0
  # SRigL: gamma_sal, the fraction of a neuron's constant fan-in that must
  # be salient for it to stay (0: no neuron ablation).
  config.sparsity.srigl_min_salient = 0.3
  # GraNet: start sparsity s_i (0: dense), the regeneration's initial death
  # rate, and the pruning window's share of [begin_step, end_step].
  config.sparsity.granet_initial_sparsity = 0.0
  config.sparsity.granet_prune_rate = 0.5
  config.sparsity.granet_prune_fraction = 0.5
  # Top-KAST: the backward set's sparsity (None: twice the forward
  # density) and the exploration penalty's scale.
  config.sparsity.topkast_backward_sparsity = (
      ml_collections.config_dict.placeholder(float))
  config.sparsity.topkast_penalty = 1e-4

  config.optimizer = ml_collections.ConfigDict()
  config.optimizer.name = 'sgd'
  config.optimizer.learning_rate = 0.1
  config.optimizer.momentum = 0.9
  config.optimizer.nesterov = True
  config.optimizer.weight_decay = 1e-4
  config.optimizer.label_smoothing = 0.1
  config.optimizer.schedule = 'cosine'
  config.optimizer.warmup_fraction = 0.02
  config.optimizer.step_decay_at = (0.5, 0.75)
  config.optimizer.step_decay_factor = 0.1
  # schedule='step' with (multiplier, start step of the 1x run) pairs, as the
  # reference's LR_SCHEDULE (warm-up to the first start; starts scale with
  # training_multiplier); replaces step_decay_at/factor and warmup_fraction.
  config.optimizer.step_multipliers = ()
  config.optimizer.grad_clip_norm = 0.0

  config.num_epochs = 20.0
  config.num_train_steps = 0  # > 0 overrides num_epochs
  config.training_multiplier = 1.0
  config.log_every_steps = 100
  config.eval_every_steps = 0  # 0: only at the end
  config.checkpoint_every_steps = 2000
  config.keep_checkpoints = 2
  config.eval_split = 'test'
  # > 0: one profiler trace of this many steps (from the 5th step of the
  # run) into the workdir, for TensorBoard's profile plugin.
  config.profile_steps = 0
  # On CPU, reuse XLA's per-step scratch buffer instead of re-mapping it
  # (rigl_jax/cpu_allocator.py); process-wide, no effect on results.
  config.tune_cpu_allocator = True
  # A NaN/Inf loss or gradient: 'stop' (error naming the step; the last good
  # checkpoint is kept) or 'skip' (leave the state unchanged for that step).
  config.on_nonfinite = 'stop'

  # Devices: axis name -> size (-1: all remaining devices). Batches split
  # along 'data'; kernels split along 'model' on their output dimension.
  config.mesh = ml_collections.ConfigDict({'data': -1, 'model': 1})
  config.sharding = ml_collections.ConfigDict()
  config.sharding.rules = ()  # (path regex, spec) pairs, e.g.
  #   (('Dense_0/kernel', (None, 'model')),); first match wins.
  config.sharding.fsdp = False  # also split kernels along 'data' (ZeRO-3)
  return config


def get_sweep():
  """The sweep `experiments/sweep.py` runs for this config: 2 methods x 2
  sparsities (add seeds with 'seed': [0, 1, 2])."""
  return {'sparsity.method': ['rigl', 'set'],
          'sparsity.sparsity': [0.8, 0.9],
          'seed': [0]}
