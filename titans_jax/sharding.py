"""Device mesh (data, fsdp, tensor) and logical-axis sharding rules.

Models name every parameter axis logically ('embed', 'mlp', 'heads', 'vocab', ...);
an experiment's `logical_axis_rules` maps those names to mesh axes, so the same
model runs data-parallel on a laptop and fully sharded on a pod.
"""

from __future__ import annotations

import math
from typing import Sequence

import jax
import numpy as np
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec

MESH_AXES = ("data", "fsdp", "tensor")

# Defaults in the MaxText style: batch over data and fsdp, weights' embed axis over
# fsdp, heads / mlp / vocab over tensor.
DEFAULT_LOGICAL_AXIS_RULES = (
    ("activation_batch", ("data", "fsdp")),
    ("activation_length", None),
    # The residual stream stays replicated over tensor (Megatron's layout); sharding its
    # embed axis also gave wrong sums on XLA:CPU (jax 0.10, 2e-2 off one device).
    ("activation_embed", None),
    ("activation_heads", "tensor"),
    ("activation_mlp", "tensor"),
    ("activation_vocab", "tensor"),
    ("embed", "fsdp"),
    ("mlp", "tensor"),
    ("heads", "tensor"),
    ("kv", None),
    ("vocab", "tensor"),
    ("norm", None),
    ("conv", None),
    ("memory_in", None),
    ("memory_out", None),
)


def mesh_shape(requested: dict, device_count: int) -> tuple[int, ...]:
  """Sizes for (data, fsdp, tensor); one size may be -1 (inferred)."""
  unknown = [name for name in MESH_AXES if requested.get(name, 1) == -1]
  sizes = {name: int(requested.get(name, 1)) for name in MESH_AXES}
  bad = [name for name, size in sizes.items() if size == 0 or size < -1]
  if bad or len(unknown) > 1:
    raise ValueError(f"mesh sizes {sizes} are invalid; expected positive sizes for "
                     f"{MESH_AXES} with at most one -1 (inferred)")
  known = math.prod(size for size in sizes.values() if size != -1)
  if unknown:
    if device_count % known:
      raise ValueError(f"mesh {sizes}: the known axes ({known} devices) do not divide the "
                       f"{device_count} devices; choose sizes whose product divides {device_count}")
    sizes[unknown[0]] = device_count // known
  if math.prod(sizes.values()) != device_count:
    raise ValueError(f"mesh {sizes} has {math.prod(sizes.values())} devices but "
                     f"{device_count} are available; make the product equal {device_count} "
                     "or set one axis to -1")
  return tuple(sizes[name] for name in MESH_AXES)


PARTITIONERS = ("gspmd", "shardy")


def has_gspmd() -> bool:
  """Whether this JAX can still compile with GSPMD: from jax 0.12 Shardy is always on and
  `jax_use_shardy_partitioner` is accepted but does nothing."""
  version = tuple(int(part) for part in jax.__version__.split(".")[:2])
  return version < (0, 12) and hasattr(jax.config, "jax_use_shardy_partitioner")


def validate_partitioner(name: str) -> None:
  if name not in PARTITIONERS:
    raise ValueError(f"partitioner={name!r} is unknown; expected one of {PARTITIONERS}")
  if name == "gspmd" and not has_gspmd():
    raise ValueError(f"partitioner='gspmd': jax {jax.__version__} has no GSPMD partitioner "
                     "(Shardy only, from jax 0.12); set partitioner='shardy'")


def use_partitioner(name: str) -> None:
  """Chooses XLA's SPMD partitioner for everything compiled from here on.

  Shardy by default, the only one from jax 0.12 on; GSPMD stays selectable on older JAX.
  Both give one device's gradients for the zoo on a (2, 2, 2) mesh
  (tests/train/test_distributed.py, which once caught Shardy mis-partitioning MAC's
  memory read: see MACMixer._piece), but GSPMD on CPU gets the plain-JAX pattern of
  tests/train/xla_partition_repro.py wrong even without activation constraints.
  """
  validate_partitioner(name)
  if has_gspmd():
    jax.config.update("jax_use_shardy_partitioner", name == "shardy")


def make_mesh(requested: dict, devices: Sequence | None = None) -> jax.sharding.Mesh:
  devices = jax.devices() if devices is None else list(devices)
  shape = mesh_shape(requested, len(devices))
  try:
    device_array = jax.experimental.mesh_utils.create_device_mesh(shape, devices)
  except Exception:  # CPU / odd topologies: plain order
    device_array = np.asarray(devices).reshape(shape)
  return jax.sharding.Mesh(device_array, MESH_AXES)


def logical_rules(rules) -> tuple:
  """Normalises ml-collections rules (lists) into flax's tuple of (name, axes)."""
  normalised = []
  for entry in rules:
    name, axes = entry
    if isinstance(axes, list):
      axes = tuple(axes)
    normalised.append((name, axes))
  return tuple(normalised)


def state_shardings(state, mesh, rules):
  """NamedSharding for every leaf of an nnx.State (or a pytree holding Variables)."""
  with nnx.logical_axis_rules(logical_rules(rules)):
    specs = nnx.get_partition_spec(state)
  return jax.tree.map(lambda spec: NamedSharding(mesh, spec), specs,
                      is_leaf=lambda x: isinstance(x, PartitionSpec))


def _path_name(path) -> str:
  """'layers/0/mixer/...' of a pytree key path (an nnx Variable's trailing .value dropped)."""
  keys = [str(getattr(k, "key", getattr(k, "idx", getattr(k, "name", k)))) for k in path]
  return "/".join(keys[:-1] if keys and keys[-1] == "value" else keys)


def check_divisible(state, shardings) -> None:
  """A ValueError naming the first leaf whose sharded axis the mesh does not divide (jax
  would refuse it only when the sharded init runs, with the internal pytree path).
  shardings: `state_shardings(state, ...)`, the same tree as state."""

  def check(path, leaf, where):
    for axis, mesh_axes in enumerate(where.spec):
      if mesh_axes is None or axis >= len(leaf.shape):
        continue
      names = (mesh_axes,) if isinstance(mesh_axes, str) else tuple(mesh_axes)
      ways = math.prod(where.mesh.shape[name] for name in names)
      if leaf.shape[axis] % ways:
        raise ValueError(
            f"{_path_name(path)} has shape {tuple(leaf.shape)}: its axis {axis} "
            f"({leaf.shape[axis]}) is split over mesh axes {names} = {ways} devices, which do not "
            f"divide it; use a mesh whose {' x '.join(names)} divides {leaf.shape[axis]}, or a "
            "model size that is a multiple")

  jax.tree_util.tree_map_with_path(check, state, shardings)


def batch_sharding(mesh) -> NamedSharding:
  """Inputs [batch, length]: batch over data and fsdp."""
  return NamedSharding(mesh, PartitionSpec(("data", "fsdp")))


def batch_divisor(mesh) -> int:
  return mesh.shape["data"] * mesh.shape["fsdp"]
