"""The one entry point: python -m titans_jax.main --config=experiments/X.py[:args] --workdir=DIR

Flags override any config field (--config.train.steps=100); the config is locked,
so a mistyped field is an error. Several processes (a pod, or launch/local.py)
pass --coordinator_address/--num_processes/--process_id, or rely on the
platform's auto-detection (TPU pods) with --distributed.
"""

from absl import app, flags, logging
from ml_collections import config_flags

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Experiment config file (experiments/*.py[:args]).",
                                lock_config=True)
flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics and the resolved config.")
flags.DEFINE_bool("distributed", False, "Call jax.distributed.initialize() (auto-detected on TPU).")
flags.DEFINE_string("coordinator_address", None, "host:port of process 0 (multi-process runs).")
flags.DEFINE_integer("num_processes", None, "Number of processes (multi-process runs).")
flags.DEFINE_integer("process_id", None, "This process's index (multi-process runs).")
flags.DEFINE_integer("cpu_devices", None, "XLA CPU devices per process: one per core puts every "
                     "core to work on a CPU-only host (batch rows split over them); also for "
                     "testing meshes.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if not FLAGS["verbosity"].present:  # Orbax logs every save at INFO; keep the console readable
    logging.set_verbosity(logging.WARNING)
  import jax

  if FLAGS.cpu_devices:
    jax.config.update("jax_num_cpu_devices", FLAGS.cpu_devices)
  if FLAGS.coordinator_address or FLAGS.distributed:
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(coordinator_address=FLAGS.coordinator_address,
                               num_processes=FLAGS.num_processes, process_id=FLAGS.process_id)
  if jax.process_index() == 0:
    print(f"titans_jax: {jax.process_count()} process(es), {jax.device_count()} "
          f"{jax.devices()[0].platform} device(s)", flush=True)
  from titans_jax import train  # after distributed init: imports touch no devices before it

  result = train.train_and_evaluate(FLAGS.config, FLAGS.workdir)
  if jax.process_index() == 0 and not result.preempted:
    _report(FLAGS.config, result)


def _report(config, result):
  """The recall evaluation (when the config asks for it) and where everything is."""
  import os

  from flax import nnx

  paths = {}
  multiples = list(config.recall_eval.length_multiples)
  if multiples:
    from titans_jax.evaluation import recall

    model, _ = nnx.merge(result.graphdef, result.state)
    seq_len = int(config.data.seq_len)
    print(f"Evaluating recall at {', '.join(f'{m}x' for m in multiples)} the training length "
          f"({seq_len} tokens)", flush=True)
    outcome = recall.evaluate_recall(
        model, lengths=[m * seq_len for m in multiples], depths=list(config.recall_eval.depths),
        samples=int(config.recall_eval.samples), task=config.data.get("task", "passkey"),
        haystack=config.data.get("haystack", "noise"), piece_len=seq_len, seed=int(config.seed))
    paths = recall.write_report(outcome, os.path.join(result.workdir, "recall"),
                                title=f"{config.model.variant}: S-NIAH {outcome.task} accuracy (%)")
  print(f"\nCheckpoints: {os.path.join(result.workdir, 'checkpoints')}\n"
        f"Metrics:     {os.path.join(result.workdir, 'metrics.jsonl')} (TensorBoard: tensorboard "
        f"--logdir {result.workdir})", flush=True)
  if paths:
    print(f"Recall:      {paths['json']}\nHeatmap:     {paths['png']}", flush=True)


def run():
  # Huge pages for XLA:CPU's per-step buffers (glibc reads them only at start: a re-exec).
  from titans_jax import host_malloc

  host_malloc.reexec_with_huge_pages()
  app.run(main)


if __name__ == "__main__":
  run()
