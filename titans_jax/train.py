"""train_and_evaluate(config, workdir): trains any model of the zoo from a config.

One process or many (`jax.distributed`), one CPU or a pod: the state is sharded
over a (data, fsdp, tensor) mesh by the config's logical-axis rules; each process
feeds its own rows of the global batch; Orbax checkpoints in the workdir make a
run resumable; SIGTERM saves and exits.
"""

from __future__ import annotations

import dataclasses
import importlib
import itertools
import math
import os
import signal
import time
from typing import Any

import jax
import ml_collections
from flax import nnx

from titans_jax import checkpointing, data, metrics, optim, sharding, train_step


class NonFiniteError(FloatingPointError):
  """The loss or gradient became NaN/inf; the last good checkpoint is kept."""


@dataclasses.dataclass
class TrainResult:
  """What a run did: for notebooks and tests."""
  step: int
  history: list  # metrics rows as written to metrics.jsonl
  workdir: str
  preempted: bool = False
  graphdef: Any = None  # nnx.merge(graphdef, state) -> (model, optimizer)
  state: Any = None  # of the last step (with early stopping, not of the best step)
  # Early stopping: the best validation step; its test metrics end the history ("test_*").
  best_step: int | None = None


def build_model(model_config: ml_collections.ConfigDict, rngs: nnx.Rngs):
  """The model named by the config's `model` section."""
  from titans_jax import models  # the zoo: imported here to keep this module light

  return models.build_model(models.ModelConfig(**model_config.to_dict()), rngs)


def resolve_model_builder(path: str):
  """'package.module:function' -> the function; '' -> the zoo's build_model."""
  if not path:
    return build_model
  module_name, _, function_name = path.partition(":")
  try:
    module = importlib.import_module(module_name)
    return getattr(module, function_name)
  except (ImportError, AttributeError) as error:
    raise ValueError(f"model_builder={path!r} cannot be imported ({error}); expected "
                     "'package.module:function' taking (model_config, rngs)") from None


def validate(config, workdir: str) -> None:
  """Cheap checks that name the field, before anything is compiled."""
  if not workdir:
    raise ValueError("workdir is empty; pass --workdir=DIR (created if missing; a run there "
                     "resumes from its checkpoints)")
  checkpointing.require_local_workdir(workdir)
  train = config.train
  for field in ("steps", "global_batch_size", "grad_accum_steps", "log_every",
                "checkpoint_every", "keep_checkpoints"):
    if int(train[field]) < 1:
      raise ValueError(f"train.{field} must be >= 1, got {train[field]}")
  if train.global_batch_size % train.grad_accum_steps:
    raise ValueError(f"train.global_batch_size={train.global_batch_size} is not a multiple of "
                     f"train.grad_accum_steps={train.grad_accum_steps}")
  if config.data.get("reset_at_documents", False):
    model = config.model
    if config.get("model_builder", ""):
      raise ValueError("data.reset_at_documents=True is for the zoo's models (they take "
                       "segments=); a model_builder model does not")
    if model.get("memory_gate_mode", "token") != "token":
      raise ValueError("data.reset_at_documents=True needs model.memory_gate_mode='token' (a "
                       "chunk-constant gate has no meaning for a document starting mid-chunk)")
  patience = int(train.get("early_stopping_patience", 0))
  if patience < 0:
    raise ValueError(f"train.early_stopping_patience must be >= 0 (0: off), got {patience}")
  if patience and not train.eval_every:
    raise ValueError(f"train.early_stopping_patience={patience} checks the validation loss at each "
                     "evaluation, but train.eval_every=0 never evaluates; expected "
                     "train.eval_every >= 1 (e.g. one epoch of steps)")
  if patience and config.data.source not in data.registry.VALIDATION_SOURCES:
    raise ValueError(f"train.early_stopping_patience={patience} needs a validation split apart "
                     f"from the test split, which data.source={config.data.source!r} does not "
                     f"have; expected one of {data.registry.VALIDATION_SOURCES} or patience 0")
  sharding.validate_partitioner(config.get("partitioner", "shardy"))
  _validate_objective(config)


def _validate_objective(config) -> None:
  """The loss, the data's labels and the model's head agree (Table 4: one class per row)."""
  objective = config.train.get("objective", "lm")
  train_step.objective_loss(objective)  # a ValueError naming the objectives
  labelled = config.data.source in data.registry.LABELLED_SOURCES
  if labelled != (objective == "classification"):
    raise ValueError(f"train.objective={objective!r} does not fit data.source="
                     f"{config.data.source!r}; 'classification' needs (and is needed by) one of "
                     f"the labelled sources {data.registry.LABELLED_SOURCES}")
  forecasting = config.data.source in data.registry.FORECAST_SOURCES
  if forecasting != (objective == "forecast"):
    raise ValueError(f"train.objective={objective!r} does not fit data.source="
                     f"{config.data.source!r}; 'forecast' needs (and is needed by) one of the "
                     f"forecasting sources {data.registry.FORECAST_SOURCES}")
  if objective == "forecast":
    _validate_forecast(config)
  if objective == "classification":
    classes = data.registry.class_names(config.data)
    output_dim = int(config.model.get("output_dim", 0))
    if output_dim != len(classes):
      raise ValueError(f"model.output_dim={output_dim} but the data has {len(classes)} classes "
                       f"{list(classes)}; expected --config.model.output_dim={len(classes)} (one "
                       "logit per class)")


def _validate_forecast(config) -> None:
  """Table 3: the model's lookback, horizon and variables match the data's (when it says)."""
  settings = data.registry.timeseries_settings(config.data)
  model = config.model
  for field, key in (("lookback", "ts_lookback"), ("horizon", "ts_horizon")):
    if field in model and int(model[field]) != settings[field]:
      raise ValueError(f"model.{field}={model[field]} but data.{key}={settings[field]}; expected "
                       f"the same value in both (--config.model.{field}={settings[field]})")
  variables = len(data.registry.timeseries_variables(config.data))
  for field in ("input_dim", "output_dim"):
    if int(model.get(field, variables)) != variables:
      raise ValueError(f"model.{field}={model[field]} but {settings['dataset']} has {variables} "
                       f"variables; expected --config.model.{field}={variables}")


@dataclasses.dataclass
class EarlyStopping:
  """The Time-Series-Library's EarlyStopping (utils/tools.py), checked at each evaluation.

  A validation loss <= the best so far is a new best (TSLib: `score < best_score + delta`
  with delta 0 counts as no improvement, so ties improve); otherwise a counter grows, and
  training stops when it reaches `patience` (TSLib's --patience, 3). A non-finite loss
  never improves. `record()` is saved with every checkpoint so a resumed run keeps the
  counter and the best step.
  """
  patience: int
  best_loss: float | None = None
  best_step: int | None = None
  bad_evals: int = 0

  @property
  def stopped(self) -> bool:
    return self.bad_evals >= self.patience

  def update(self, step: int, loss: float) -> bool:
    """True if `loss` is a new best (its step becomes best_step)."""
    if math.isfinite(loss) and (self.best_loss is None or loss <= self.best_loss):
      self.best_loss, self.best_step, self.bad_evals = float(loss), int(step), 0
      return True
    self.bad_evals += 1
    return False

  def record(self) -> dict:
    return {"best_loss": self.best_loss, "best_step": self.best_step,
            "bad_evals": self.bad_evals}


class _Preemption:
  """SIGTERM (preemption) asks the loop to save and exit at the next step."""

  def __init__(self):
    self.requested = False
    self._previous = None

  def __enter__(self):
    try:
      self._previous = signal.signal(signal.SIGTERM, self._handle)
    except ValueError:  # not the main thread (e.g. a notebook worker): no handler
      self._previous = None
    return self

  def _handle(self, signum, frame):
    self.requested = True

  def __exit__(self, *exc):
    if self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)


def _global_batch(local_batch, batch_sharding):
  return {key: jax.make_array_from_process_local_data(batch_sharding, value)
          for key, value in local_batch.items()}


def validate_activation_constraints(config, mesh_shape: tuple[int, ...], backend: str) -> None:
  """Refuses the one layout known to train wrong: a zoo MAC with activation_constraints=True
  on an XLA:CPU mesh that splits data, fsdp and tensor alike.

  Measured 2026-12-06/07 (jax 0.10.2 and 0.12.1): the first step's loss 4e-3 off one
  device's and gradients off by O(1), bit-identical under Shardy and GSPMD. Pinning the
  embedding output alone triggers it; a mesh with any axis of 1, the other variants, or
  the constraints off all give one device's values to ~1e-6. The bug in plain JAX:
  tests/train/xla_partition_repro.py (rerun it on a new jax before lifting this).
  """
  if (not config.get("activation_constraints", False) or backend != "cpu"
      or config.get("model_builder", "") or config.model.get("variant") != "mac"
      or min(mesh_shape) == 1):
    return
  raise ValueError(f"activation_constraints=True with model.variant='mac' on a (data, fsdp, "
                   f"tensor) = {tuple(mesh_shape)} mesh: XLA:CPU mis-partitions this layout "
                   "(losses ~0.4% off one device's). Set activation_constraints=False (the "
                   "parameters' and inputs' shardings place the activations correctly), or "
                   "give data, fsdp or tensor a size of 1")


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str, *,
                       model_builder=None) -> TrainResult:
  """Trains (or resumes) the config's model in workdir.

  model_builder(model_config, rngs) -> nnx.Module replaces the zoo's build_model,
  for models of your own (logits [B, T, vocab] from int tokens [B, T]).
  """
  validate(config, workdir)
  model_builder = model_builder or resolve_model_builder(config.get("model_builder", ""))
  workdir = os.path.abspath(workdir)
  os.makedirs(workdir, exist_ok=True)
  primary = jax.process_index() == 0
  sharding.use_partitioner(config.get("partitioner", "shardy"))
  mesh = sharding.make_mesh(config.mesh.to_dict())
  validate_activation_constraints(config, mesh.devices.shape, jax.default_backend())
  rules = sharding.logical_rules(config.logical_axis_rules)
  batch_split = sharding.batch_divisor(mesh)
  micro = config.train.global_batch_size // config.train.grad_accum_steps
  if micro % batch_split:
    raise ValueError(f"the micro-batch of {micro} rows (train.global_batch_size / "
                     f"train.grad_accum_steps) does not divide over the mesh's data x fsdp = "
                     f"{batch_split} devices; use a multiple of {batch_split}")

  # Data first: an unreadable path fails before anything is compiled.
  vocab_size = int(config.model.vocab_size)
  loader_args = dict(global_batch_size=config.train.global_batch_size, seed=config.seed,
                     process_index=jax.process_index(), process_count=jax.process_count())
  train_batches = data.make_batches(data.make_source(config.data, split="train",
                                                     vocab_size=vocab_size), **loader_args)
  # Tables 3 / 4 score whole finite splits: each example once, the last batch padded.
  one_pass = config.data.source in data.registry.ONE_PASS_EVAL_SOURCES

  def eval_batches_of(split):
    return data.make_batches(data.make_source(config.data, split=split, vocab_size=vocab_size),
                             shuffle=False, one_pass=one_pass, **loader_args)

  eval_batches = eval_batches_of("eval")
  patience = int(config.train.get("early_stopping_patience", 0))
  val_batches = eval_batches_of("val") if patience else None

  tx = optim.make_optimizer(config.optimizer, total_steps=config.train.steps)

  def create_objects():
    model = model_builder(config.model, nnx.Rngs(config.seed))
    return model, nnx.Optimizer(model, tx, wrt=nnx.Param)

  # Shapes and shardings first: nothing is allocated until the sharded init below.
  graphdef, abstract_state = nnx.split(nnx.eval_shape(create_objects))
  state_shardings = sharding.state_shardings(abstract_state, mesh, rules)
  sharding.check_divisible(abstract_state, state_shardings)
  batch_sharding = sharding.batch_sharding(mesh)
  num_params = sum(x.size for x in jax.tree.leaves(nnx.state(abstract_state, nnx.Param)))

  checkpoints = checkpointing.Checkpointer(workdir, keep=config.train.keep_checkpoints,
                                           async_save=config.train.async_checkpoint,
                                           best_metric="val_loss" if patience else None)
  meta = {"model": config.model.to_dict(), "num_params": int(num_params)}
  latest = checkpoints.latest_step()
  train_iter = data.make_iterator(train_batches, prefetch_threads=config.train.prefetch_threads)
  activation_rules = rules if config.get("activation_constraints", False) else ()
  abstract = jax.tree.map(
      lambda leaf, where: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=where),
      abstract_state, state_shardings)
  stopping = EarlyStopping(patience) if patience else None
  with jax.set_mesh(mesh), nnx.logical_axis_rules(activation_rules):
    if latest is None:
      init = jax.jit(lambda: nnx.split(create_objects())[1], out_shardings=state_shardings)
      state = init()
      start_step = 0
    else:
      state, data_state = checkpoints.restore(latest, abstract, meta)
      train_iter.set_state(data_state)
      start_step = latest
      if stopping is not None:  # the counter and best step as saved (none: a fresh count)
        stopping = EarlyStopping(patience, **checkpoints.progress(latest).get("early_stopping", {}))
      if primary:
        print(f"Resuming from the checkpoint of step {latest} in {checkpoints.directory}",
              flush=True)

    if primary:
      checkpointing.dump_json(os.path.join(workdir, "config.json"), config.to_dict())
    objective = config.train.get("objective", "lm")
    step_fn = jax.jit(train_step.make_train_step(graphdef,
                                                 grad_accum_steps=config.train.grad_accum_steps,
                                                 objective=objective),
                      in_shardings=(state_shardings, batch_sharding),
                      out_shardings=(state_shardings, None), donate_argnums=(0,))
    eval_fn = jax.jit(train_step.make_eval_step(graphdef, objective=objective),
                      in_shardings=(state_shardings, batch_sharding))
    writer = metrics.MetricsWriter(workdir, enabled=primary, total_steps=config.train.steps,
                                   resume_step=start_step)
    peak = metrics.peak_flops_per_device(jax.devices()[0].device_kind)
    tokens_per_step = config.train.global_batch_size * config.data.seq_len
    history, pending, preempted = [], None, False
    last_time, last_logged = time.time(), start_step

    def evaluate(state, batches=eval_batches, prefix="eval"):
      """eval_steps batches (a one-pass split ends sooner: its last batch is padded)."""
      totals = {"loss_sum": 0.0, "weight": 0.0, "correct": 0.0}
      for batch in itertools.islice(iter(batches.to_iter_dataset()), config.train.eval_steps):
        result = jax.device_get(eval_fn(state, _global_batch(batch, batch_sharding)))
        totals = {k: totals[k] + float(result[k]) for k in totals}
      weight = max(totals["weight"], 1.0)
      row = {f"{prefix}_loss": totals["loss_sum"] / weight,
             f"{prefix}_accuracy": totals["correct"] / weight}
      if objective == "forecast":  # Table 3's columns (train_step.forecast_squared_error)
        row.update({f"{prefix}_mse": row[f"{prefix}_loss"],
                    f"{prefix}_mae": row[f"{prefix}_accuracy"]})
      return row

    def report_best(step):
      """TSLib's test(): the test split scored by the best-validation model (its checkpoint)."""
      checkpoints.wait()
      best_state, _ = checkpoints.restore(stopping.best_step, abstract, meta)
      row = {"best_step": stopping.best_step, "best_val_loss": stopping.best_loss,
             **evaluate(best_state, prefix="test")}
      already = primary and any(  # a rerun of a finished run reports again, once in the file
          r.get("best_step") == stopping.best_step and r["step"] == step
          for r in metrics.read_jsonl(writer.jsonl_path))
      if not already:
        writer.write(step, row)
      if primary:
        print(f"Early stopping: the best validation loss {stopping.best_loss:.6g} was at step "
              f"{stopping.best_step}; its test metrics: " + ", ".join(
                  f"{k} {v:.6g}" for k, v in row.items() if k.startswith("test_")), flush=True)
      history.append({"step": step, **row})

    def finish(step_metrics, step):
      """Host side of a finished step: checks and logs (one step late)."""
      nonlocal last_time, last_logged
      values = jax.device_get(step_metrics)
      if not bool(values["finite"]):
        checkpoints.wait()
        last_good = checkpoints.latest_step()
        kept = (f"the last good checkpoint of step {last_good} in {checkpoints.directory} is kept"
                if last_good is not None else "no checkpoint had been written yet")
        raise NonFiniteError(
            f"non-finite loss or gradient at step {step} (loss={float(values['loss'])}, "
            f"grad_norm={float(values['grad_norm'])}); the run stopped and {kept}")
      if step % config.train.log_every == 0 or step == config.train.steps:
        now = time.time()
        tokens_per_sec = (step - last_logged) * tokens_per_step / max(now - last_time, 1e-9)
        row = {"loss": values["loss"], "accuracy": values["accuracy"],
               "grad_norm": values["grad_norm"], "tokens_per_sec": tokens_per_sec,
               "learning_rate": optim.learning_rate_schedule(
                   config.optimizer, config.train.steps)(step - 1)}
        if peak:  # model FLOPs ~ 6 x parameters per token (forward + backward)
          row["mfu"] = 6 * num_params * tokens_per_sec / (peak * jax.device_count())
        writer.write(step, row)
        writer.progress(step, row)
        history.append({"step": step, **{k: float(v) for k, v in row.items()}})
        last_time, last_logged = now, step

    try:
      with _Preemption() as preemption:
        step = start_step
        while step < config.train.steps and not (stopping is not None and stopping.stopped):
          batch = _global_batch(next(train_iter), batch_sharding)
          state, step_metrics = step_fn(state, batch)
          step += 1
          if pending is not None:
            finish(*pending)
          pending = (step_metrics, step)
          at_eval = config.train.eval_every and step % config.train.eval_every == 0
          at_save = step % config.train.checkpoint_every == 0 or step == config.train.steps
          # Early stopping saves every evaluated step: the best one must be on disk.
          at_save = at_save or bool(at_eval and stopping is not None)
          if at_eval or at_save or preemption.requested:
            finish(*pending)  # a checkpoint only ever holds checked steps
            pending = None
          save_metrics = None
          if at_eval:
            row = evaluate(state)
            if stopping is not None:  # TSLib: vali() on the val split each epoch, then the test
              row.update(evaluate(state, val_batches, prefix="val"))
              stopping.update(step, row["val_loss"])
              if math.isfinite(row["val_loss"]):  # Orbax ranks the steps by it (best kept)
                save_metrics = {"val_loss": row["val_loss"]}
            writer.write(step, row)
            writer.progress(step, row)
            history.append({"step": step, **row})
          if at_save or preemption.requested:
            progress = {"early_stopping": stopping.record()} if stopping is not None else None
            checkpoints.save(step, state, train_iter.get_state(), meta, force=True,
                             progress=progress, metrics=save_metrics)
          if preemption.requested:
            preempted = True
            if primary:
              print(f"SIGTERM: saved step {step} in {checkpoints.directory}; exiting", flush=True)
            break
          if stopping is not None and stopping.stopped:
            if primary:
              print(f"Early stopping at step {step}: no better validation loss in "
                    f"{stopping.bad_evals} evaluations (train.early_stopping_patience="
                    f"{patience}); step {step} is saved", flush=True)
            break
        if pending is not None:
          finish(*pending)
        if stopping is not None and not preempted:
          if stopping.best_step is not None:
            report_best(step)
          elif primary:
            print("Early stopping: no validation loss was measured (or none was finite); "
                  "nothing to report", flush=True)
    finally:  # also on errors: async saves finish, files close
      checkpoints.close()
      writer.close()
  return TrainResult(step=step, history=history, workdir=workdir, preempted=preempted,
                     graphdef=graphdef, state=state,
                     best_step=stopping.best_step if stopping is not None else None)


def load_model(workdir: str, step: int | None = None):
  """(model, config, step) of a workdir's checkpoint (latest by default), on one device.

  For evaluation and generation after training; the run's config comes from the
  workdir's config.json, so a checkpoint is always read with the model it was made by.
  """
  import json

  path = os.path.join(checkpointing.require_local_workdir(workdir), "config.json")
  if not os.path.exists(path):
    raise ValueError(f"{workdir!r} holds no config.json; expected the --workdir of a training run")
  with open(path) as handle:
    config = ml_collections.ConfigDict(json.load(handle))
  model_builder = resolve_model_builder(config.get("model_builder", ""))
  tx = optim.make_optimizer(config.optimizer, total_steps=config.train.steps)

  def create_objects():
    model = model_builder(config.model, nnx.Rngs(config.seed))
    return model, nnx.Optimizer(model, tx, wrt=nnx.Param)

  graphdef, abstract_state = nnx.split(nnx.eval_shape(create_objects))
  mesh = sharding.make_mesh({"data": 1, "fsdp": 1, "tensor": 1}, jax.devices()[:1])
  shardings = sharding.state_shardings(abstract_state, mesh, config.logical_axis_rules)
  abstract = jax.tree.map(lambda leaf, where: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=where),
                          abstract_state, shardings)
  num_params = sum(x.size for x in jax.tree.leaves(nnx.state(abstract_state, nnx.Param)))
  checkpoints = checkpointing.Checkpointer(workdir, async_save=False)
  try:
    step = checkpoints.latest_step() if step is None else step
    if step is None:
      raise ValueError(f"{workdir!r} holds no checkpoint yet; train first (python -m titans_jax.main)")
    state, _ = checkpoints.restore(step, abstract, {"model": config.model.to_dict(),
                                                    "num_params": int(num_params)})
  finally:
    checkpoints.close()
  model, _ = nnx.merge(graphdef, state)
  return model, config, step

