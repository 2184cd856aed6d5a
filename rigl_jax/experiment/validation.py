"""One check of a whole experiment config, before anything is built.

`validate(config)` walks every field it knows (top level, ``data``,
``model``, ``sparsity``, ``optimizer``, ``mesh``, ``sharding``) and raises a
single `ValueError` naming the first bad field, what it holds and what is
allowed; unknown fields (typos) are refused with the list of valid ones.
Sections it does not own (e.g. a ticket search's settings) are declared in
`EXTRA_SECTIONS` by the code that reads them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
import numbers
from typing import Any

import rigl_jax
from rigl_jax import distributions
from rigl_jax import methods
from rigl_jax import schedules
from rigl_jax import structure
from rigl_jax.experiment import optimizers
from rigl_jax.experiment.data import base as data_base

# A check returns None if the value is fine, else what is allowed.
Check = Callable[[Any], 'str | None']


def _is_int(v: Any) -> bool:
  return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def _is_num(v: Any) -> bool:
  return isinstance(v, numbers.Real) and not isinstance(v, bool)


def choice(*values: Any) -> Check:
  return lambda v: None if v in values else f'one of {list(values)}'


def integer(lo: int = 0, none_ok: bool = False) -> Check:
  def check(v):
    if v is None and none_ok:
      return None
    if _is_int(v) and v >= lo:
      return None
    return f'an integer >= {lo}' + (' or None' if none_ok else '')
  return check


def number(lo: float, hi: float, lo_open: bool = False,
           hi_open: bool = False, none_ok: bool = False) -> Check:
  def check(v):
    if v is None and none_ok:
      return None
    if _is_num(v) and (v > lo if lo_open else v >= lo) and (
        v < hi if hi_open else v <= hi):
      return None
    return (f'a number in {"(" if lo_open else "["}{lo}, {hi}'
            f'{")" if hi_open else "]"}' + (' or None' if none_ok else ''))
  return check


def boolean(v: Any) -> 'str | None':
  return None if isinstance(v, bool) else 'True or False'


def string(none_ok: bool = False) -> Check:
  def check(v):
    if isinstance(v, str) or (v is None and none_ok):
      return None
    return 'a string' + (' or None' if none_ok else '')
  return check


def fractions(v: Any) -> 'str | None':
  ok = isinstance(v, (list, tuple)) and all(
      _is_num(x) and 0 < x < 1 for x in v)
  return None if ok else 'a list of numbers in (0, 1)'


def multiplier_pairs(v: Any) -> 'str | None':
  ok = isinstance(v, (list, tuple)) and all(
      isinstance(p, (list, tuple)) and len(p) == 2 and _is_num(p[0])
      and p[0] > 0 and _is_num(p[1]) and p[1] >= 0 for p in v) and all(
          a[1] <= b[1] for a, b in zip(v, v[1:]))
  return None if ok else ('a list of (multiplier > 0, start step >= 0) '
                          'pairs with non-decreasing starts')


def anything(v: Any) -> None:
  del v
  return None


def mapping(v: Any) -> 'str | None':
  return None if isinstance(v, Mapping) or hasattr(v, 'to_dict') else (
      'a dict')


def is_sparse_check(v: Any) -> 'str | None':
  if v is None or isinstance(v, str) or (
      isinstance(v, (list, tuple)) and all(isinstance(x, str) for x in v)):
    return None
  return 'None, a path regex or a list of path regexes'


def rules_check(v: Any) -> 'str | None':
  ok = isinstance(v, (list, tuple)) and all(
      isinstance(r, (list, tuple)) and len(r) == 2 and isinstance(r[0], str)
      and isinstance(r[1], (list, tuple)) for r in v)
  return None if ok else ('a list of (path regex, [axis name or None per '
                          'dimension]) pairs')


def parsed_by(parse: Callable[[Any], Any], allowed: str) -> Check:
  """A check that accepts what ``parse`` accepts (it raises ValueError)."""
  def check(v):
    try:
      parse(v)
    except (ValueError, TypeError):
      return allowed
    return None
  return check


def _models() -> tuple[str, ...]:
  from rigl_jax.experiment import models  # pylint: disable=g-import-not-at-top
  return tuple(sorted(models.MODELS))


SCHEMA: dict[str, dict[str, Check]] = {
    '': {
        'seed': integer(0),
        'num_epochs': number(0, float('inf'), lo_open=True),
        'num_train_steps': integer(0),
        'training_multiplier': number(0, float('inf'), lo_open=True),
        'log_every_steps': integer(1),
        'eval_every_steps': integer(0),
        'checkpoint_every_steps': integer(0),
        'keep_checkpoints': integer(1),
        'eval_split': string(none_ok=True),
        'tune_cpu_allocator': boolean,
        'on_nonfinite': choice('stop', 'skip'),
        'profile_steps': integer(0),
    },
    'data': {
        'name': choice(*data_base.DATASETS),
        'source': choice(*data_base.SOURCES),
        'batch_size': integer(1),
        'eval_batch_size': integer(1),
        'image_size': integer(0),
        'seq_len': integer(0),
        'train_fraction': number(0, 1, lo_open=True),
        'tfds_data_dir': string(none_ok=True),
        'shuffle_buffer': integer(0),
        'vocab_size': integer(4),
        'max_corpus_chars': integer(1),
        'token_dir': string(none_ok=True),
    },
    'model': {
        'name': lambda v: choice(*_models())(v),
        'kwargs': mapping,
        'dtype': choice('float32', 'bfloat16'),
    },
    # Every `rigl_jax.sparsify` field and method hyperparameter is a field
    # (rigl_jax.CONFIG_FIELDS); the checks below refine the ones they name.
    'sparsity': {
        **{field: anything for field in rigl_jax.CONFIG_FIELDS},
        'method': lambda v: choice(*methods.names())(v),
        'sparsity': number(0, 1, hi_open=True),
        'distribution': choice(*distributions.DISTRIBUTIONS),
        'update_freq': integer(1),
        'begin_step': integer(0),
        'end_step': integer(1, none_ok=True),
        'end_fraction': number(0, 1, lo_open=True),
        'drop_fraction': number(0, 1),
        'drop_fraction_schedule': parsed_by(
            schedules.parse_drop_fraction_schedule,
            "'cosine', 'constant', 'exponential' or 'exponential_K' (K > 0)"),
        'is_sparse': is_sparse_check,
        'custom_sparsity': lambda v: None if v is None else mapping(v),
        'stacked': lambda v: None if v is None else mapping(v),
        'seed': integer(0, none_ok=True),
        'erk_power_scale': number(0, float('inf')),
        'sparsity_budget': choice(*distributions.BUDGETS),
        'check_leaks': boolean,
        'grow_init': parsed_by(
            lambda v: methods.base.parse_grow_init(
                v, methods.base.ALL_GROW_INITS),
            f'one of {list(methods.base.ALL_GROW_INITS)}, optionally '
            "with a '_K' divisor (K > 0); the 'grad_' ones for RigL "
            'only'),
        'noise_std': number(0, float('inf')),
        'rigl_acc_scale': number(0, float('inf')),
        'snfs_momentum': number(0, 1, hi_open=True),
        'snfs_redistribution': boolean,
        'pruning_scope': choice('layer', 'global'),
        'pruning_initial_sparsity': number(0, 1, hi_open=True),
        'srigl_min_salient': number(0, float('inf')),
        'granet_initial_sparsity': number(0, 1, hi_open=True),
        'granet_prune_rate': number(0, 1),
        'granet_prune_fraction': number(0, 1, lo_open=True),
        'topkast_backward_sparsity': number(0, 1, hi_open=True,
                                            none_ok=True),
        'topkast_penalty': number(0, float('inf')),
        'structure': parsed_by(
            structure.parse, "'unstructured' or 'N:M' with 0 < N < M (e.g. "
            "'2:4')"),
    },
    'optimizer': {
        'name': choice(*optimizers.OPTIMIZERS),
        'learning_rate': number(0, float('inf'), lo_open=True),
        'lr_reference_batch_size': integer(1),
        'momentum': number(0, 1, hi_open=True),
        'nesterov': boolean,
        'weight_decay': number(0, float('inf')),
        'label_smoothing': number(0, 1, hi_open=True),
        'schedule': choice(*optimizers.LR_SCHEDULES),
        'warmup_fraction': number(0, 1, hi_open=True),
        'step_decay_at': fractions,
        'step_decay_factor': number(0, float('inf'), lo_open=True),
        'step_multipliers': multiplier_pairs,
        'grad_clip_norm': number(0, float('inf')),
    },
    'mesh': {},  # axis name -> size; checked by `_check_mesh`
    'sharding': {
        'rules': rules_check,
        'fsdp': boolean,
    },
}

# Required fields per section (the rest have defaults).
REQUIRED = {
    'data': ('name',),
    'model': ('name',),
    'sparsity': ('method', 'sparsity'),
    'optimizer': ('name', 'learning_rate'),
}

# Top-level fields owned by other parts of rigl_jax (name -> check).
EXTRA_SECTIONS: dict[str, Check] = {}


def _as_dict(v: Any) -> dict[str, Any]:
  return v.to_dict() if hasattr(v, 'to_dict') else dict(v)


def _fail(field: str, value: Any, allowed: str) -> None:
  raise ValueError(f'config.{field} = {value!r} is not valid: expected '
                   f'{allowed}')


def _check_mesh(mesh: Mapping[str, Any]) -> None:
  if 'data' not in mesh:
    _fail('mesh', dict(mesh), "a dict of axis name -> size with a 'data' "
          'axis, e.g. {"data": -1, "model": 1}')
  for name, size in mesh.items():
    if not _is_int(size) or (size < 1 and size != -1):
      _fail(f'mesh.{name}', size, 'a positive integer or -1 (all remaining '
            'devices)')
  if sum(1 for s in mesh.values() if s == -1) > 1:
    _fail('mesh', dict(mesh), 'at most one axis of size -1')


def validate(config: Any) -> None:
  """Checks every field of an experiment config.

  Args:
    config: an ``ml_collections.ConfigDict`` (or nested mapping) as the
      files in ``configs/`` build.

  Raises:
    ValueError: one message naming the first bad or unknown field, its value
      and what is allowed.
  """
  top = _as_dict(config)
  known = set(SCHEMA['']) | (set(SCHEMA) - {''}) | set(EXTRA_SECTIONS)
  for key, value in top.items():
    if key not in known:
      raise ValueError(f'unknown config field {key!r}; valid top-level '
                       f'fields are {sorted(known)}')
    if key in SCHEMA['']:
      allowed = SCHEMA[''][key](value)
      if allowed:
        _fail(key, value, allowed)
    elif key in EXTRA_SECTIONS:
      allowed = EXTRA_SECTIONS[key](value)
      if allowed:
        _fail(key, value, allowed)
  for section, fields in SCHEMA.items():
    if not section:
      continue
    if section not in top:
      if section in REQUIRED:
        raise ValueError(f'config.{section} is missing; it needs at least '
                         f'{list(REQUIRED[section])}')
      continue
    value = top[section]
    if mapping(value):
      _fail(section, value, 'a ConfigDict of fields')
    sub = _as_dict(value)
    if section == 'mesh':
      _check_mesh(sub)
      continue
    for name in REQUIRED.get(section, ()):
      if sub.get(name) is None:
        raise ValueError(f'config.{section}.{name} is required; valid values:'
                         f' {fields[name](object()) or "any"}')
    for name, v in sub.items():
      if name not in fields:
        raise ValueError(f'unknown config field {section}.{name!r}; valid '
                         f'fields of config.{section} are {sorted(fields)}')
      allowed = fields[name](v)
      if allowed:
        _fail(f'{section}.{name}', v, allowed)
  opt = _as_dict(top['optimizer'])
  if opt.get('step_multipliers') and (opt.get('schedule') != 'step' or
                                      opt.get('warmup_fraction')):
    _fail('optimizer.step_multipliers', opt['step_multipliers'],
          "() unless optimizer.schedule is 'step' and "
          "optimizer.warmup_fraction is 0 (the first pair's start is the "
          'warm-up)')
  sp = _as_dict(top['sparsity'])
  if sp.get('end_step') is not None and sp['end_step'] <= sp.get(
      'begin_step', 0):
    _fail('sparsity.end_step', sp['end_step'],
          f'an integer > sparsity.begin_step ({sp.get("begin_step", 0)})')
