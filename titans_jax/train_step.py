"""The functional train and eval steps: `nnx.split` once, `jax.jit` with shardings,
`nnx.merge` inside. Gradient accumulation is a `lax.scan` over micro-batches."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax
from flax import nnx


def row_weights(batch, rows: int):
  """Per-row weights [rows]: batch["row_weight"] where evaluation padded its last batch
  (pipeline.make_batches(one_pass=True): 0 on the padding rows), else ones."""
  if "row_weight" in batch:
    return batch["row_weight"].astype(jnp.float32)
  return jnp.ones((rows,), jnp.float32)


def weighted_cross_entropy(logits, batch):
  """Sums over tokens: (loss, weight, correct), with float32 logits."""
  logits = logits.astype(jnp.float32)
  losses = optax.softmax_cross_entropy_with_integer_labels(logits, batch["targets"])
  weights = batch["weights"].astype(jnp.float32) * row_weights(batch, logits.shape[0])[:, None]
  correct = (jnp.argmax(logits, axis=-1) == batch["targets"]).astype(jnp.float32)
  return jnp.sum(losses * weights), jnp.sum(weights), jnp.sum(correct * weights)


def classification_cross_entropy(logits, batch):
  """Sums over examples: (loss, examples, correct) of one label per row (Table 4, DNA).

  logits [B, T, num_classes] are averaged over each row's real positions
  (batch["weights"] = 1), then scored against batch["label"] [B]. Mean pooling follows
  HyenaDNA's GenomicBenchmarks decoder (`mode: pool`), whose numbers Titans Table 4
  compares with; unlike it we leave padding out of the mean. The head is linear, so this
  equals pooling the final hidden states before the head. A row without real positions,
  or with row_weight 0 (the padding of a one-pass evaluation), counts for nothing.
  """
  logits = logits.astype(jnp.float32)
  mask = batch["weights"].astype(jnp.float32)
  length = jnp.sum(mask, axis=-1)
  pooled = jnp.einsum("btc,bt->bc", logits, mask) / jnp.maximum(length, 1.0)[:, None]
  labels = batch["label"]
  losses = optax.softmax_cross_entropy_with_integer_labels(pooled, labels)
  rows = (length > 0).astype(jnp.float32) * row_weights(batch, logits.shape[0])
  correct = (jnp.argmax(pooled, axis=-1) == labels).astype(jnp.float32)
  return jnp.sum(losses * rows), jnp.sum(rows), jnp.sum(correct * rows)


def forecast_squared_error(outputs, batch):
  """Sums over every forecast value: (squared error, values, absolute error) (Table 3).

  outputs and batch["targets"] are [B, horizon, C] (standardised, as the Time-Series-
  Library scores them); the steps divide by the count, giving MSE as the loss and MAE
  in the "accuracy" slot (train.py reports them as eval_mse / eval_mae too). Rows of
  row_weight 0 (the padding of a one-pass evaluation) count for nothing, so the test
  split's windows each count once, as TSLib's test() concatenates them.
  """
  error = outputs.astype(jnp.float32) - batch["targets"].astype(jnp.float32)
  rows = row_weights(batch, error.shape[0])
  values_per_row = error.size // error.shape[0]
  weights = rows.reshape((-1,) + (1,) * (error.ndim - 1))
  return (jnp.sum(error * error * weights), jnp.sum(rows) * values_per_row,
          jnp.sum(jnp.abs(error) * weights))


# train.objective -> loss(logits, batch) -> (loss sum, weight, correct): the steps divide
# the sums by the weight (tokens for "lm", examples for "classification", forecast values
# for "forecast", whose "correct" is the absolute error: MAE).
OBJECTIVES = {"lm": weighted_cross_entropy, "classification": classification_cross_entropy,
              "forecast": forecast_squared_error}


def objective_loss(objective: str):
  if objective not in OBJECTIVES:
    raise ValueError(f"train.objective={objective!r} is unknown; expected one of "
                     f"{tuple(OBJECTIVES)}")
  return OBJECTIVES[objective]


def forward(model, batch):
  """Logits of a batch; packed rows with "segments" read each document alone."""
  return model(batch["inputs"], segments=batch["segments"]) if "segments" in batch else model(
      batch["inputs"])


def _micro_batches(batch, count):
  return jax.tree.map(lambda x: x.reshape((count, x.shape[0] // count) + x.shape[1:]), batch)


def make_train_step(graphdef, *, grad_accum_steps: int = 1, objective: str = "lm"):
  """step(state, batch) -> (state, metrics); state = nnx.state((model, optimizer))."""
  loss_of = objective_loss(objective)

  def step(state, batch):
    model, optimizer = nnx.merge(graphdef, state)
    model_graph, params, rest = nnx.split(model, nnx.Param, ...)

    def loss_fn(params, micro):
      loss_sum, weight, correct = loss_of(forward(nnx.merge(model_graph, params, rest), micro),
                                          micro)
      return loss_sum, (weight, correct)

    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)

    def accumulate(carry, micro):
      grads, loss_sum, weight, correct = carry
      (micro_loss, (micro_weight, micro_correct)), micro_grads = grad_fn(params, micro)
      grads = jax.tree.map(jnp.add, grads, micro_grads)
      return (grads, loss_sum + micro_loss, weight + micro_weight, correct + micro_correct), None

    zero = jnp.zeros((), jnp.float32)
    init = (jax.tree.map(jnp.zeros_like, params), zero, zero, zero)
    (grads, loss_sum, weight, correct), _ = jax.lax.scan(
        accumulate, init, _micro_batches(batch, grad_accum_steps))
    weight = jnp.maximum(weight, 1.0)
    grads = jax.tree.map(lambda g: g / weight, grads)
    loss = loss_sum / weight
    grad_norm = optax.tree.norm(grads)
    finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
    optimizer.update(model, grads)
    new_state = nnx.state((model, optimizer))
    # A non-finite step changes nothing: the host stops the run one step later.
    new_state = jax.tree.map(lambda new, old: jnp.where(finite, new, old), new_state, state)
    metrics = {"loss": loss, "accuracy": correct / weight, "grad_norm": grad_norm,
               "finite": finite, "tokens": weight}
    return new_state, metrics

  return step


def make_eval_step(graphdef, *, objective: str = "lm"):
  """step(state, batch) -> sums of loss, weight and correct (train.py adds them up)."""
  loss_of = objective_loss(objective)

  def step(state, batch):
    model, _ = nnx.merge(graphdef, state)
    loss_sum, weight, correct = loss_of(forward(model, batch), batch)
    return {"loss_sum": loss_sum, "weight": weight, "correct": correct}

  return step
