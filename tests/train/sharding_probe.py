"""Run as a subprocess with 8 CPU devices: trains TinyLM on a (2, 2, 2) mesh and
prints every parameter's sharding next to what the logical rules say (JSON)."""

import json
import sys

import jax

jax.config.update("jax_num_cpu_devices", 8)

from flax import nnx  # noqa: E402

from tests.train.tiny_model import build_tiny, tiny_config  # noqa: E402
from titans_jax import sharding, train  # noqa: E402


def main(workdir):
  config = tiny_config(**{"mesh.data": 2, "mesh.fsdp": 2, "mesh.tensor": 2, "train.eval_every": 0})
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
  try:  # a batch that does not divide over data x fsdp = 4 devices
    bad = tiny_config(**{"mesh.data": 2, "mesh.fsdp": 2, "mesh.tensor": 2,
                         "train.global_batch_size": 6})
    train.train_and_evaluate(bad, workdir + "_bad", model_builder=build_tiny)
    report["bad_batch_error"] = None
  except ValueError as error:
    report["bad_batch_error"] = str(error)
  print("PROBE " + json.dumps(report, default=str))


if __name__ == "__main__":
  main(sys.argv[1])
