"""The functional train and eval steps: `nnx.split` once, `jax.jit` with shardings,
`nnx.merge` inside. Gradient accumulation is a `lax.scan` over micro-batches."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax
from flax import nnx


def weighted_cross_entropy(logits, batch):
  """Sums over tokens: (loss, weight, correct), with float32 logits."""
  logits = logits.astype(jnp.float32)
  losses = optax.softmax_cross_entropy_with_integer_labels(logits, batch["targets"])
  weights = batch["weights"].astype(jnp.float32)
  correct = (jnp.argmax(logits, axis=-1) == batch["targets"]).astype(jnp.float32)
  return jnp.sum(losses * weights), jnp.sum(weights), jnp.sum(correct * weights)


def forward(model, batch):
  """Logits of a batch; packed rows with "segments" read each document alone."""
  return model(batch["inputs"], segments=batch["segments"]) if "segments" in batch else model(
      batch["inputs"])


def _micro_batches(batch, count):
  return jax.tree.map(lambda x: x.reshape((count, x.shape[0] // count) + x.shape[1:]), batch)


def make_train_step(graphdef, *, grad_accum_steps: int = 1):
  """step(state, batch) -> (state, metrics); state = nnx.state((model, optimizer))."""

  def step(state, batch):
    model, optimizer = nnx.merge(graphdef, state)
    model_graph, params, rest = nnx.split(model, nnx.Param, ...)

    def loss_fn(params, micro):
      loss_sum, weight, correct = weighted_cross_entropy(
          forward(nnx.merge(model_graph, params, rest), micro), micro)
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


def make_eval_step(graphdef):
  def step(state, batch):
    model, _ = nnx.merge(graphdef, state)
    loss_sum, weight, correct = weighted_cross_entropy(forward(model, batch), batch)
    return {"loss_sum": loss_sum, "weight": weight, "correct": correct}

  return step
