"""Orbax checkpoints: train state, Grain iterator state and a description, saved together.

Saves are asynchronous and atomic (Orbax writes a temporary folder, then renames
it). A checkpoint that does not match the run's config, or cannot be read, stops
the run with a message; it is never overwritten or silently replaced by a fresh start.
"""

from __future__ import annotations

import json
import logging
import os
import sys

import jax
import orbax.checkpoint as ocp


class CheckpointError(ValueError):
  """A checkpoint that cannot be used by this run (left untouched on disk)."""


def require_local_workdir(workdir: str) -> str:
  """The workdir as an absolute path; a URL (gs://, s3://, ...) is refused.

  Checkpoints, config.json and metrics.jsonl (appended to) go through the local
  filesystem, so a bucket must be mounted: on a pod, every worker mounts the same one.
  """
  if "://" in str(workdir):
    raise ValueError(
        f"workdir={workdir!r} is a URL; titans_jax writes its checkpoints, config.json and "
        "metrics.jsonl through the filesystem, so expected a path: mount the bucket on every "
        "host (e.g. `gcsfuse --implicit-dirs BUCKET /gcs/BUCKET`, or launch/tpu_pod.sh with "
        "MOUNT_BUCKET=BUCKET) and pass --workdir=/gcs/BUCKET/...")
  return os.path.abspath(workdir)


class _AbandonedReadsQuieted:
  """Around a restore: keeps Orbax's abandoned array reads from printing if it fails.

  Orbax reads a checkpoint's arrays as concurrent asyncio tasks and closes their event
  loop as soon as one read fails; the other reads end later and report into the closed
  loop: "Event loop is closed" from TensorStore's callbacks (through sys.unraisablehook)
  and "Task / Future exception was never retrieved" for reads of this checkpoint (the
  asyncio logger), a screen of tracebacks after the CheckpointError that already says
  what is wrong. The first of them can come before the failure reaches Python, so the
  filters go in before the restore; after a success they come out again, after a
  failure they stay (the reports can come at any time, up to the process's exit).
  """

  def __init__(self, directory: str):
    self.directory = directory

  def __enter__(self):
    self.previous = sys.unraisablehook
    previous = self.previous

    def hook(unraisable):
      error = unraisable.exc_value
      if not (isinstance(error, RuntimeError) and str(error) == "Event loop is closed"):
        previous(unraisable)

    self.hook = hook
    sys.unraisablehook = hook
    logging.getLogger("asyncio").addFilter(self._keep_record)
    return self

  def _keep_record(self, record) -> bool:
    text = record.getMessage()
    if record.exc_info and record.exc_info[1] is not None:
      text += str(record.exc_info[1])
    return not ("exception was never retrieved" in text and self.directory in text)

  def __exit__(self, error_type, error, traceback):
    if error_type is None:
      if sys.unraisablehook is self.hook:  # unless something replaced it since
        sys.unraisablehook = self.previous
      logging.getLogger("asyncio").removeFilter(self._keep_record)
    return False


def describe_state(state) -> dict:
  """Path -> [shape, dtype] of every array: what a checkpoint must match."""
  flat = jax.tree_util.tree_flatten_with_path(state)[0]
  return {jax.tree_util.keystr(path): [list(leaf.shape), str(leaf.dtype)] for path, leaf in flat}


class Checkpointer:
  """A CheckpointManager in `<workdir>/checkpoints` that keeps the last `keep` steps.

  best_metric (early stopping, train.early_stopping_patience): saves may carry
  metrics={best_metric: value}; the step of the lowest value is kept as well, however
  old (Orbax preservation policies: a step stays if LatestN(keep) or BestN(1) keeps it),
  so the best model can be restored at the end of a run, as TSLib reloads its best
  checkpoint.
  """

  def __init__(self, workdir: str, *, keep: int = 3, async_save: bool = True,
               best_metric: str | None = None):
    self.directory = os.path.join(require_local_workdir(workdir), "checkpoints")
    if best_metric:
      policies = ocp.checkpoint_managers
      metric = lambda metrics: float(metrics[best_metric])
      # best_fn (min) makes Orbax write the metrics with each step, so the best step
      # survives a restart; the policy keeps it next to the latest `keep` steps.
      options = ocp.CheckpointManagerOptions(
          create=True, enable_async_checkpointing=async_save, best_fn=metric, best_mode="min",
          preservation_policy=policies.AnyPreservationPolicy([
              policies.LatestN(n=keep),
              policies.BestN(get_metric_fn=metric, reverse=True, n=1,
                             keep_checkpoints_without_metrics=False)]))
    else:
      options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True,
                                             enable_async_checkpointing=async_save)
    self.manager = ocp.CheckpointManager(self.directory, options=options,
                                         item_names=("state", "data", "meta"))

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def save(self, step: int, state, data_state: dict, meta: dict, *, force: bool = False,
           progress: dict | None = None, metrics: dict | None = None) -> bool:
    """progress: the loop's own record (early stopping) restored by `progress(step)`."""
    meta = dict(meta, state=describe_state(state))
    if progress is not None:
      meta["progress"] = progress
    args = ocp.args.Composite(state=ocp.args.StandardSave(state),
                              data=ocp.args.JsonSave(data_state), meta=ocp.args.JsonSave(meta))
    return self.manager.save(step, args=args, force=force, metrics=metrics)

  def _meta(self, step: int) -> dict:
    where = os.path.join(self.directory, str(step))
    try:
      saved_meta = self.manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))
      return saved_meta["meta"]
    except Exception as error:
      raise CheckpointError(
          f"the checkpoint at {where} cannot be read ({type(error).__name__}: {error}). It was "
          "left as it is; move it away, or start with another --workdir") from None

  def progress(self, step: int) -> dict:
    """The record saved with `step` by save(progress=...); {} when it has none."""
    return dict(self._meta(step).get("progress") or {})

  def restore(self, step: int, abstract_state, meta: dict):
    """Returns (state, data_state) of `step`; abstract_state carries shapes and shardings."""
    where = os.path.join(self.directory, str(step))
    saved_meta = self._meta(step)
    _check_compatible(where, saved_meta, dict(meta, state=describe_state(abstract_state)))
    try:
      with _AbandonedReadsQuieted(self.directory):
        restored = self.manager.restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract_state), data=ocp.args.JsonRestore()))
    except Exception as error:
      raise CheckpointError(
          f"the checkpoint at {where} is corrupt or incomplete ({type(error).__name__}: "
          f"{error}). It was left as it is; move it away, or start with another --workdir") from None
    return restored["state"], restored["data"]

  def wait(self) -> None:
    self.manager.wait_until_finished()

  def close(self) -> None:
    self.manager.wait_until_finished()
    self.manager.close()


def _check_compatible(where: str, saved: dict, current: dict) -> None:
  saved_model, model = saved.get("model", {}), current.get("model", {})
  changed = sorted(key for key in set(saved_model) | set(model)
                   if saved_model.get(key) != model.get(key))
  if changed:
    details = ", ".join(f"{key}: checkpoint {saved_model.get(key)!r} vs config {model.get(key)!r}"
                        for key in changed[:8])
    raise CheckpointError(
        f"the checkpoint at {where} was written for another model config ({details}). It was "
        "left as it is; use the config it was trained with, or another --workdir")
  saved_state, state = saved.get("state", {}), current["state"]
  if saved_state != state:
    missing = sorted(set(state) - set(saved_state))[:5]
    extra = sorted(set(saved_state) - set(state))[:5]
    shapes = sorted(key for key in set(state) & set(saved_state)
                    if state[key] != saved_state[key])[:5]
    raise CheckpointError(
        f"the checkpoint at {where} holds another train state structure (missing: {missing}, "
        f"unexpected: {extra}, other shapes: {shapes}). It was left as it is; use the config it "
        "was trained with, or another --workdir")


def dump_json(path: str, value) -> None:
  """Writes JSON atomically (temporary file, then rename)."""
  tmp = f"{path}.tmp"
  with open(tmp, "w") as handle:
    json.dump(value, handle, indent=2, sort_keys=True, default=str)
  os.replace(tmp, path)
