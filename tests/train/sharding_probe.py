"""Run as a subprocess with 8 CPU devices: trains a model on a (2, 2, 2) mesh and
prints every parameter's sharding next to what the logical rules say (JSON).

  python tests/train/sharding_probe.py WORKDIR [tiny|zoo] [8|1] [shardy|gspmd]
tiny: TinyLM (plus bad-batch and bad-mesh checks); zoo: a tiny Titans MAC from the zoo.
Then the devices (1 = one device) and the SPMD partitioner.
"""

import json
import sys

import jax

MODEL = sys.argv[2] if len(sys.argv) > 2 else "tiny"
DEVICES = int(sys.argv[3]) if len(sys.argv) > 3 else 8
PARTITIONER = sys.argv[4] if len(sys.argv) > 4 else "shardy"
jax.config.update("jax_num_cpu_devices", DEVICES)

from flax import nnx  # noqa: E402

from tests.train.tiny_model import build_tiny, tiny_config  # noqa: E402
from titans_jax import configs, sharding, train  # noqa: E402


def zoo_config(mesh):
  config = configs.base_config()
  config.model.update(variant="mac", vocab_size=64, width=32, num_heads=4, num_layers=1,
                      segment_len=8, window=8, memory_chunk=4, num_persistent=2)
  config.data.seq_len = 16
  config.train.update(steps=4, global_batch_size=4, log_every=1, eval_every=0, checkpoint_every=4)
  config.optimizer.update(warmup_steps=1, learning_rate=1e-2)
  config.mesh.update(mesh)
  config.partitioner = PARTITIONER
  return config


def main(workdir):
  mesh = {"mesh.data": 2, "mesh.fsdp": 2, "mesh.tensor": 2} if DEVICES == 8 else {}
  if MODEL == "zoo":
    config = zoo_config({key.split(".")[1]: value for key, value in mesh.items()})
    result = train.train_and_evaluate(config, workdir)
  else:
    config = tiny_config(**mesh, **{"train.eval_every": 0})
    config.model.width = 32
    result = train.train_and_evaluate(config, workdir, model_builder=build_tiny)
  model, _ = nnx.merge(result.graphdef, result.state)
  rules = dict(sharding.logical_rules(config.logical_axis_rules))
  report = {}
  for path, variable in nnx.to_flat_state(nnx.state(model, nnx.Param)):
    names = variable.get_metadata().get("out_sharding") or ()
    expected = [rules.get(name) for name in names]
    actual = list(variable.value.sharding.spec) + [None] * (len(names) - len(variable.value.sharding.spec))
    report["/".join(map(str, path))] = {"expected": expected, "actual": actual,
                                        "devices": len(variable.value.sharding.device_set)}
  if MODEL != "tiny":
    print("PROBE " + json.dumps(report, default=str))
    return
  try:  # a batch that does not divide over data x fsdp = 4 devices
    bad = tiny_config(**{"mesh.data": 2, "mesh.fsdp": 2, "mesh.tensor": 2,
                         "train.global_batch_size": 6})
    train.train_and_evaluate(bad, workdir + "_bad", model_builder=build_tiny)
    report["bad_batch_error"] = None
  except ValueError as error:
    report["bad_batch_error"] = str(error)
  try:  # a width-10 model: its mlp axis (20) split over tensor = 8 devices
    bad = tiny_config(**{"mesh.tensor": 8, "model.width": 10})
    train.train_and_evaluate(bad, workdir + "_bad_mesh", model_builder=build_tiny)
    report["bad_mesh_error"] = None
  except ValueError as error:
    report["bad_mesh_error"] = str(error)
  try:  # a zoo MAC with pinned activations on this mesh: refused before anything compiles
    bad = zoo_config({"data": 2, "fsdp": 2, "tensor": 2})
    bad.activation_constraints = True
    train.train_and_evaluate(bad, workdir + "_pinned_mac")
    report["pinned_mac_error"] = None
  except ValueError as error:
    report["pinned_mac_error"] = str(error)
  print("PROBE " + json.dumps(report, default=str))


if __name__ == "__main__":
  main(sys.argv[1])
