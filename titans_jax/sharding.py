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


def use_partitioner(name: str) -> None:
  """Chooses XLA's SPMD partitioner for everything compiled from here on.

  GSPMD by default: with jax 0.10 on CPU, Shardy gave a Titans MAC gradients that
  differ from one device by ~10% on a (2, 2, 2) mesh (data x fsdp x tensor), while
  GSPMD matches to 1e-7 (tests/train/test_distributed.py checks it).
  """
  if name not in PARTITIONERS:
    raise ValueError(f"partitioner={name!r} is unknown; expected one of {PARTITIONERS}")
  try:
    jax.config.update("jax_use_shardy_partitioner", name == "shardy")
  except AttributeError:  # a JAX without the switch has only Shardy
    if name == "gspmd":
      raise ValueError("this JAX has no GSPMD partitioner; set partitioner='shardy'") from None


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


def batch_sharding(mesh) -> NamedSharding:
  """Inputs [batch, length]: batch over data and fsdp."""
  return NamedSharding(mesh, PartitionSpec(("data", "fsdp")))


def batch_divisor(mesh) -> int:
  return mesh.shape["data"] * mesh.shape["fsdp"]
