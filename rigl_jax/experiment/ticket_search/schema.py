"""The config sections a ticket search reads, declared to the validation.

Light on purpose (the validation, ml_collections and the IMP rule's
constants): ``main.py`` imports it to check a ticket-search config in
seconds, before the drivers and the training loop (and TensorFlow, which
clu loads) are imported.
"""

from __future__ import annotations

from typing import Any, Optional

import ml_collections

from rigl_jax.experiment import validation
from rigl_jax.tickets import imp

TICKET_SEARCHES = ('cs', 'imp')


def _lambdas_check(v: Any) -> Optional[str]:
  vals = v if isinstance(v, (list, tuple)) else [v]
  ok = vals and all(isinstance(x, (int, float)) and not isinstance(x, bool)
                    and x >= 0 for x in vals)
  return None if ok else 'a non-negative number or a list of them'


# The config sections a ticket search reads (field -> check), declared to
# `rigl_jax.experiment.validation` so that `builders.build` accepts and checks
# them.
CONFIG_SECTIONS = {
    'imp': {
        'rounds': validation.integer(0),
        'prune_fraction': validation.number(0, 1),
        'scope': validation.choice(*imp.SCOPES),
        'rewind_step': validation.integer(0),
        'controls': lambda v: None if isinstance(v, (list, tuple)) and all(
            c in imp.CONTROLS for c in v) else (
                f'a list of controls out of {list(imp.CONTROLS)}'),
    },
    'cs': {
        'lambdas': _lambdas_check,
        'mask_init': validation.number(-float('inf'), float('inf')),
        'final_temperature': validation.number(1, float('inf')),
        'rounds': validation.integer(1),
        'rewind_step': validation.integer(0),
        'mask_lr': validation.number(0, float('inf'), lo_open=True),
        'mask_momentum': validation.number(0, 1, hi_open=True),
        'mask_nesterov': validation.boolean,
    },
}


# Defaults of the fields a config leaves out.
DEFAULTS = {
    'imp': {'rounds': 5, 'prune_fraction': 0.2, 'scope': 'global',
            'rewind_step': 0, 'controls': ()},
    # The authors' defaults (main.py:16-31): 3 rounds, lambda 1e-8, both
    # optimizers SGD with Nesterov momentum 0.9, the mask's at lr 0.1.
    'cs': {'lambdas': (1e-8,), 'mask_init': 0.0, 'final_temperature': 200.0,
           'rounds': 3, 'rewind_step': 0, 'mask_lr': 0.1,
           'mask_momentum': 0.9, 'mask_nesterov': True},
}


def section(config: ml_collections.ConfigDict, name: str) -> dict[str, Any]:
  """``config.<name>`` over `DEFAULTS` as a dict."""
  out = dict(DEFAULTS[name])
  given = config.get(name)
  if given is not None:
    out.update(given.to_dict() if hasattr(given, 'to_dict') else given)
  return out


def _section_check(fields: dict[str, validation.Check]) -> validation.Check:
  def check(value):
    if validation.mapping(value):
      return 'a ConfigDict of fields'
    for name, v in dict(value.to_dict() if hasattr(value, 'to_dict')
                        else value).items():
      if name not in fields:
        return (f'only the fields {sorted(fields)} (unknown field '
                f'{name!r})')
      allowed = fields[name](v)
      if allowed:
        return f'{name} = {v!r} to be {allowed}'
    return None
  return check


validation.EXTRA_SECTIONS['ticket_search'] = (
    lambda v: None if v in TICKET_SEARCHES else
    f'one of {list(TICKET_SEARCHES)}')
for _name, _fields in CONFIG_SECTIONS.items():
  validation.EXTRA_SECTIONS[_name] = _section_check(_fields)
