"""Run as a subprocess with 8 CPU devices: every zoo variant's loss and gradients on a
(2, 2, 2) data x fsdp x tensor mesh (the default logical rules, parameters and batch
sharded, activations free) against one device's, in one process. Prints JSON:
{variant: {"loss": |difference|, "grad": worst relative difference over all parameters}}.

  python tests/train/variants_mesh_probe.py [shardy|gspmd] [pinned]

"pinned": activations pinned by their logical names too (activation_constraints=True), the
layout train.py refuses for MAC (tests/train/xla_partition_repro.py): MAC then fails here.
"""

import json
import sys

import jax

jax.config.update("jax_num_cpu_devices", 8)

import jax.numpy as jnp  # noqa: E402
from flax import nnx  # noqa: E402

from titans_jax import configs, sharding, train  # noqa: E402
from titans_jax.models import VARIANTS  # noqa: E402


def model_config(variant):
  config = configs.base_config()
  config.model.update(variant=variant, vocab_size=64, width=32, num_heads=4, num_layers=2,
                      segment_len=8, window=8, memory_chunk=4, num_persistent=2)
  return config


def compare(variant, mesh, tokens, pinned):
  config = model_config(variant)
  graphdef, params = nnx.split(train.build_model(config.model, nnx.Rngs(0)), nnx.Param)

  def loss(params, tokens):  # next-token cross entropy, as the train step's
    logits = nnx.merge(graphdef, params)(tokens[:, :-1]).astype(jnp.float32)
    picked = jnp.take_along_axis(jax.nn.log_softmax(logits), tokens[:, 1:, None], axis=-1)
    return -jnp.mean(picked)

  step = jax.jit(jax.value_and_grad(loss))
  single_loss, single_grads = step(params, tokens)
  shardings = sharding.state_shardings(params, mesh, config.logical_axis_rules)
  rules = sharding.logical_rules(config.logical_axis_rules) if pinned else ()
  with jax.set_mesh(mesh), nnx.logical_axis_rules(rules):
    placed = jax.device_put(params, shardings)
    mesh_loss, mesh_grads = step(placed, jax.device_put(tokens, sharding.batch_sharding(mesh)))
  worst = max(float(jnp.max(jnp.abs(a - b)) / (jnp.max(jnp.abs(a)) + 1e-30))
              for a, b in zip(jax.tree.leaves(single_grads), jax.tree.leaves(mesh_grads)))
  return {"loss": abs(float(single_loss) - float(mesh_loss)), "grad": worst}


def main(partitioner, pinned=False):
  sharding.use_partitioner(partitioner)
  mesh = sharding.make_mesh({"data": 2, "fsdp": 2, "tensor": 2})
  tokens = jax.random.randint(jax.random.key(1), (4, 17), 0, 64)
  print("PROBE " + json.dumps({variant: compare(variant, mesh, tokens, pinned) for variant in VARIANTS}))


if __name__ == "__main__":
  main(sys.argv[1] if len(sys.argv) > 1 else "shardy", "pinned" in sys.argv[2:])
