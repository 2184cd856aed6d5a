"""Command-line mistakes as one ``error:`` line and exit code 2.

Every command of rigl_jax (``main.py``, ``python -m rigl_jax.analysis``,
``python -m rigl_jax.deploy``, ``experiments/sweep.py``) reports a bad flag
the same way: one line that names the flag, what is wrong and the valid
choices (the closest valid name for a typo), exit code 2, no traceback.

* `parse_flags` is the absl flags parser for ``app.run``: it catches what
  ml_collections' config overrides raise (unknown fields, wrong types) and
  explains unknown fields by walking the config (`override_problem`).
* `ArgumentParser` is `argparse.ArgumentParser` with a one-line error.
* `load_config` loads ``path[:arg]`` as ``config_flags`` does, for the
  scripts that take a config without absl flags; `config_module` imports
  a config file (``experiments/sweep.py`` reads its ``get_sweep``).
"""

from __future__ import annotations

import argparse
import difflib
import importlib.util
import os
import sys
from typing import Any, NoReturn, Optional, Sequence

from absl import flags


def config_module(path: str) -> Any:
  """The config file at ``path``, imported (not run: ``get_config`` and
  ``get_sweep`` are its caller's to call).

  Raises:
    ValueError: the file is missing.
  """
  spec = importlib.util.spec_from_file_location('_loaded_config', path)
  if spec is None or not os.path.exists(path):
    raise ValueError(f'config file {path!r} not found')
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def load_config(config: str) -> Any:
  """``get_config(arg)`` of the file ``path[:arg]``, as ``config_flags``
  loads it (the repository root must be on ``sys.path``: configs import
  ``configs.X``).

  Raises:
    ValueError: the file is missing or defines no ``get_config``.
  """
  path, _, arg = config.partition(':')
  module = config_module(path)
  if not hasattr(module, 'get_config'):
    raise ValueError(f'{path} defines no get_config()')
  return module.get_config(arg) if arg else module.get_config()


def fail(message: str) -> NoReturn:
  """Prints ``error: <message>`` to stderr and exits with code 2."""
  print(f'error: {message}', file=sys.stderr)
  sys.exit(2)


def _fields(node: Any) -> list[str]:
  return sorted(node.keys()) if hasattr(node, 'keys') else []


def override_problem(config: Any, dotted: str,
                     prefix: str = 'config') -> Optional[str]:
  """Why ``--<prefix>.<dotted>`` names no field of ``config``, or None.

  Args:
    config: the loaded config (a ConfigDict or nested dicts).
    dotted: the field path after the prefix, e.g. ``'sparsity.sparsty'``.
    prefix: the flag's name.

  Returns:
    A one-line explanation with the closest valid names, or None when the
    path names a field.

  Example:

  >>> print(override_problem({'sparsity': {'sparsity': 0.9}},
  ...                        'sparsity.sparsty'))
  unknown field config.sparsity.sparsty; did you mean config.sparsity.sparsity? (fields of config.sparsity: sparsity)
  """
  node, where = config, prefix
  for part in dotted.split('.'):
    fields = _fields(node)
    if not hasattr(node, 'keys'):
      return (f'{where} holds a value of type {type(node).__name__}, not a '
              f'section: --{prefix}.{dotted} names no field')
    if part not in fields:
      close = difflib.get_close_matches(part, fields, n=1)
      hint = f'; did you mean {where}.{close[0]}?' if close else ''
      if not fields:
        return (f'unknown field {where}.{part} ({where} is empty; set it '
                f'whole: --{where}="{{\'{part}\': ...}}")')
      return (f'unknown field {where}.{part}{hint} (fields of {where}: '
              f'{", ".join(fields)})')
    node, where = node[part], f'{where}.{part}'
  return None


def _overrides(argv: Sequence[str], prefix: str) -> list[str]:
  """The dotted paths of the ``--<prefix>.<path>[=value]`` flags."""
  out = []
  for arg in argv[1:]:
    for dashes in ('--', '-'):
      if arg.startswith(f'{dashes}{prefix}.'):
        out.append(arg[len(dashes) + len(prefix) + 1:].split('=', 1)[0])
        break
  return out


def _config_path(argv: Sequence[str], prefix: str) -> Optional[str]:
  """The value of ``--<prefix>=PATH`` or ``--<prefix> PATH``."""
  for i, arg in enumerate(argv):
    for dashes in ('--', '-'):
      flag = f'{dashes}{prefix}'
      if arg.startswith(flag + '='):
        return arg[len(flag) + 1:]
      if arg == flag and i + 1 < len(argv):
        return argv[i + 1]
  return None


def parse_flags(argv: Sequence[str], prefix: str = 'config',
                flag_values: flags.FlagValues = flags.FLAGS) -> list[str]:
  """Parses absl flags; a mistake is one ``error:`` line and exit 2.

  Pass it to ``app.run(main, flags_parser=cli.parse_flags)``.

  Args:
    argv: the command line.
    prefix: the name of the config flag (its overrides are
      ``--<prefix>.<field>``).
    flag_values: the flags to parse into.

  Returns:
    The arguments that are not flags, as absl's parser returns them.
  """
  try:
    remaining = flag_values(list(argv))
  except flags.IllegalFlagValueError as e:
    # "flag --config.seed=x: invalid literal for int() ...": names the flag.
    # A config file that raised while loading puts the traceback after
    # that line: its last line says why.
    lines = [l.strip() for l in str(e).splitlines() if l.strip()]
    fail(lines[0] if len(lines) == 1 else f'{lines[0]} {lines[-1]}')
  except flags.Error as e:
    fail(f'{e}; see --help')
  except Exception as e:  # pylint: disable=broad-except
    # ml_collections raises AttributeError / KeyError for a field that
    # does not exist: load the config alone and say which one it is.
    problem = None
    overrides = _overrides(argv, prefix)
    path = _config_path(argv, prefix)
    if overrides and path:
      try:  # the config as its file gives it, without the overrides
        config = flag_values[prefix].parser.parse(path)
        problem = next(filter(None, (override_problem(config, o, prefix)
                                     for o in overrides)), None)
      except Exception:  # pylint: disable=broad-except
        pass
    if problem is None and isinstance(e, AttributeError) and str(
        e).endswith("has no attribute 'get_config'"):
      problem = (f'--{prefix}: {path} defines no get_config() (a config '
                 'file returns its ml_collections.ConfigDict from it)')
    if problem is None:
      # A KeyError's message is the repr of its key: show it unquoted.
      text = (str(e.args[0]) if isinstance(e, KeyError) and e.args
              else str(e))
      first = (text.splitlines() or [type(e).__name__])[0]
      problem = f'bad --{prefix} flag: {first}'
    fail(problem)
  config = flag_values[prefix].value if prefix in flag_values else None
  if config is not None:
    try:  # a config file that failed to load raises on first use
      config.keys()
    except Exception as e:  # pylint: disable=broad-except
      lines = [l.strip() for l in str(e).splitlines() if l.strip()]
      fail(f'--{prefix}: cannot load the config file: '
           f'{lines[-1] if lines else type(e).__name__}')
  return remaining


class ArgumentParser(argparse.ArgumentParser):
  """`argparse.ArgumentParser` whose errors are one ``error:`` line.

  argparse prints the usage and then the error; here the usage moves to
  ``--help`` and the exit code stays 2.
  """

  def error(self, message: str) -> NoReturn:
    fail(f'{message} (see {self.prog} --help)')
