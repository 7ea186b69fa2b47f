"""Pure JAX math of titans_jax (no Flax): the neural memory and its helpers."""

from titans_jax.ops.memory_types import (MemoryConfig, MemoryState, init_memory_state,
                                         init_memory_weights, memory_dims)
from titans_jax.ops.dense import dense, dot_general_2d
from titans_jax.ops.memory import memory_apply, memory_read
from titans_jax.ops.memory_reference import memory_apply_reference

__all__ = [
    "MemoryConfig", "MemoryState", "init_memory_state", "init_memory_weights", "memory_dims",
    "memory_apply", "memory_read", "memory_apply_reference", "dense", "dot_general_2d",
]
