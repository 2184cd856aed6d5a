"""Device mesh and parameter sharding for the training loop.

The mesh comes from the config (``config.mesh = {'data': -1, 'model': 1}``:
axis name -> size, one size may be -1 for "all remaining devices"). Batches
are split along ``data``. Parameters follow path rules: by default every
kernel (ndim >= 2) is split along ``model`` on its last (output) dimension
when the ``model`` axis has more than one device, and, with
``config.sharding.fsdp``, along ``data`` on its largest remaining dimension
(FSDP/ZeRO-3 style), never along the layer axis of a stacked leaf (scanned
blocks). A model may name a leaf's ``model`` dimension instead of the last
(`model_dims`, e.g. a transformer's attention heads and MLP hidden units,
Megatron style: Q/K/V kernels ``(d, heads, head_dim)`` on the heads, the
output projection ``(heads, head_dim, d)`` on the heads, ``fc1`` on its
output and ``fc2`` on its input). Explicit ``config.sharding.rules`` (path
regex -> partition spec) come first.

Every other leaf of the train state that belongs to a parameter (its mask,
momentum, Adam moments, SNFS's gradient EMA, ...) is sharded exactly like
that parameter: a state leaf belongs to the parameter whose path is a suffix
of the leaf's path and whose shape it has. Everything else is replicated.

`jax.jit` with these shardings lets XLA (GSPMD) insert the collectives, so the
mask update's per-layer top-k runs over the whole layer, not per shard, and a
sharded run computes the same masks as a single-device run.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
import math
import re
from typing import Any, Optional

from absl import logging
import jax
from jax.sharding import Mesh
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
import numpy as np

from rigl_jax import layers as layers_lib
from rigl_jax import paths as paths_lib

DATA_AXIS = 'data'
MODEL_AXIS = 'model'

# A rule: (path regex, partition spec entries: an axis name or None per dim).
Rule = tuple[str, Sequence[Optional[str]]]


def mesh_shape(axes: Mapping[str, int], num_devices: int) -> dict[str, int]:
  """Resolves the config's axis sizes (one may be -1) for ``num_devices``.

  Args:
    axes: axis name -> size; must contain ``'data'``; at most one -1.
    num_devices: devices available (over all processes).

  Returns:
    axis name -> size. Without a -1 axis the product may be smaller than
    ``num_devices``: the mesh then uses the first devices only.

  Raises:
    ValueError: naming the bad sizes and the device count.
  """
  axes = dict(axes)
  if DATA_AXIS not in axes:
    raise ValueError(f"config.mesh needs a {DATA_AXIS!r} axis; got "
                     f'{axes} (e.g. {{"data": -1, "model": 1}})')
  for name, size in axes.items():
    if not isinstance(size, (int, np.integer)) or (size < 1 and size != -1):
      raise ValueError(f'config.mesh.{name} must be a positive integer or -1 '
                       f'(all remaining devices); got {size!r}')
  free = [n for n, s in axes.items() if s == -1]
  if len(free) > 1:
    raise ValueError(f'config.mesh: only one axis may be -1; got {axes}')
  fixed = math.prod(s for s in axes.values() if s != -1)
  if free:
    if num_devices % fixed:
      raise ValueError(f'config.mesh {axes}: {num_devices} devices are not '
                       f'divisible by the fixed axes (product {fixed})')
    axes[free[0]] = num_devices // fixed
  elif fixed > num_devices:
    raise ValueError(f'config.mesh {axes} needs {fixed} devices, but only '
                     f'{num_devices} are available; use -1 for one axis')
  return axes


def make_mesh(axes: Mapping[str, int],
              devices: Optional[Sequence[jax.Device]] = None) -> Mesh:
  """A `Mesh` over ``devices`` (all devices if None) with the config's axes.

  Args:
    axes: axis name -> size as in `mesh_shape`.
    devices: the devices, all processes' devices in `jax.devices()` order.

  Returns:
    The mesh; axes in the order given.
  """
  devices = list(jax.devices() if devices is None else devices)
  shape = mesh_shape(axes, len(devices))
  size = math.prod(shape.values())
  if size < len(devices):
    logging.warning('config.mesh %s uses %d of the %d devices.', shape, size,
                    len(devices))
    devices = devices[:size]
  if len(devices) == len(jax.devices()):
    from jax.experimental import mesh_utils  # pylint: disable=g-import-not-at-top
    grid = mesh_utils.create_device_mesh(tuple(shape.values()), devices)
  else:
    grid = np.asarray(devices).reshape(tuple(shape.values()))
  return Mesh(grid, tuple(shape))


def _check_spec(path: str, shape: tuple[int, ...], spec: Sequence[Any],
                mesh: Mesh) -> P:
  if len(spec) > len(shape):
    raise ValueError(f'sharding rule for {path}: spec {tuple(spec)} has more '
                     f'entries than the leaf has dimensions {shape}')
  for dim, axis in zip(shape, spec):
    if axis is None:
      continue
    names = axis if isinstance(axis, (tuple, list)) else (axis,)
    for name in names:
      if name not in mesh.shape:
        raise ValueError(f'sharding rule for {path}: unknown mesh axis '
                         f'{name!r}; mesh axes are {list(mesh.shape)}')
    size = math.prod(mesh.shape[n] for n in names)
    if dim % size:
      raise ValueError(f'sharding rule for {path}: dimension {dim} of shape '
                       f'{shape} is not divisible by mesh axis {axis!r} '
                       f'(size {size})')
  return P(*spec)


def param_spec(path: str, shape: tuple[int, ...], mesh: Mesh,
               rules: Sequence[Rule] = (), fsdp: bool = False,
               model_dims: Sequence[tuple[str, int]] = (),
               stacked: Optional[Mapping[str, int]] = None) -> P:
  """The partition spec of one parameter.

  Args:
    path: the parameter's path, as `rigl_jax.path_str` writes it.
    shape: its shape.
    mesh: the mesh.
    rules: (regex, spec) pairs; the first whose regex matches ``path``
      (``re.search``) decides.
    fsdp: also split kernels along ``data`` (largest free dimension that
      divides).
    model_dims: (regex, dimension) pairs: the first match names the
      dimension (negative: from the end, so stacked leaves need no other
      rule) split along ``model``, for leaves of any rank; unmatched
      kernels use their last dimension.
    stacked: ``{path regex: axis}`` of leaves stacking layers along
      ``axis`` (as `rigl_jax.sparsify` takes it): FSDP leaves that axis
      whole.

  Returns:
    A `PartitionSpec`.

  Raises:
    ValueError: a rule names an unknown axis or does not divide the shape.
  """
  for pattern, spec in rules:
    if re.search(pattern, path):
      return _check_spec(path, shape, spec, mesh)
  spec: list[Optional[str]] = [None] * len(shape)
  dim = next((d for pattern, d in model_dims if re.search(pattern, path)),
             None)
  if dim is None and len(shape) < 2:
    return P(*spec)
  dim = -1 if dim is None else dim
  model = mesh.shape.get(MODEL_AXIS, 1)
  if model > 1 and -len(shape) <= dim < len(shape) and (
      shape[dim] % model == 0):
    spec[dim] = MODEL_AXIS
  data = mesh.shape.get(DATA_AXIS, 1)
  if fsdp and data > 1 and len(shape) >= 2:
    layer_axis = layers_lib.stack_axis(layers_lib.parse_stacked(stacked),
                                       path, shape)
    free = [i for i in range(len(shape))
            if spec[i] is None and shape[i] % data == 0 and i != layer_axis]
    if free:
      spec[max(free, key=lambda i: shape[i])] = DATA_AXIS
  return P(*spec)


def params_specs(params: Any, mesh: Mesh, rules: Sequence[Rule] = (),
                 fsdp: bool = False,
                 model_dims: Sequence[tuple[str, int]] = (),
                 stacked: Optional[Mapping[str, int]] = None) -> Any:
  """`param_spec` for every leaf of ``params`` (arrays or shape structs)."""
  return jax.tree_util.tree_map_with_path(
      lambda path, x: param_spec(paths_lib.path_str(path), tuple(x.shape),
                                 mesh, rules, fsdp, model_dims, stacked),
      params)


def state_shardings(state: Any, params: Any, specs: Any, mesh: Mesh) -> Any:
  """Shardings for a whole train state, following its parameters.

  A leaf of ``state`` takes the spec of the parameter whose key path is the
  longest suffix of the leaf's key path and whose shape equals the leaf's
  (so masks, momenta, moments and any per-parameter statistics are split
  like their parameter); every other leaf is replicated.

  Args:
    state: a pytree of arrays or `jax.ShapeDtypeStruct`s.
    params: the parameters (arrays or shape structs).
    specs: `params_specs(params, ...)`.
    mesh: the mesh.

  Returns:
    A pytree of `NamedSharding`s shaped like ``state``.
  """
  by_path = {}
  for (path, p), spec in zip(
      jax.tree_util.tree_flatten_with_path(params)[0],
      jax.tree.leaves(specs, is_leaf=lambda x: isinstance(x, P))):
    by_path[tuple(paths_lib.path_str([k]) for k in path)] = (tuple(p.shape),
                                                             spec)
  lengths = sorted({len(k) for k in by_path}, reverse=True)

  def one(path, leaf):
    keys = tuple(paths_lib.path_str([k]) for k in path)
    for n in lengths:
      if n <= len(keys) and keys[-n:] in by_path:
        shape, spec = by_path[keys[-n:]]
        if tuple(np.shape(leaf)) == shape:
          return NamedSharding(mesh, spec)
    return NamedSharding(mesh, P())

  return jax.tree_util.tree_map_with_path(one, state)


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """Batches: the leading (example) dimension split along ``data``."""
  return NamedSharding(mesh, P(DATA_AXIS))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def global_batch(batch: Mapping[str, np.ndarray],
                 sharding: NamedSharding) -> dict[str, jax.Array]:
  """This process's share of a batch -> global arrays split along ``data``.

  Args:
    batch: name -> this process's examples (leading dimension).
    sharding: `batch_sharding(mesh)`.

  Returns:
    name -> a global `jax.Array` with every process's examples.
  """
  return {k: jax.make_array_from_process_local_data(sharding, np.asarray(v))
          for k, v in batch.items()}
