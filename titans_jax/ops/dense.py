"""Dense projections x [..., d_in] @ W [d_in, d_out] as one 2-D matmul.

Why: for x with two or more leading axes ([B, T, d_in]) the weight gradient that
autodiff emits is dot(g, x) followed by a transpose; XLA:CPU folds the transpose
into a physical copy of g ([d_out, B*T], a strided transposition of the largest
array of the layer): 27-43% of the projection's forward + backward time here. With
the leading axes merged first, the weight gradient is one x^T g matmul that reads
both operands in place (`benchmarks/dense_ab.py` measures both forms).
The values are the same matmul's; only the graph's shape differs.
"""

from __future__ import annotations

import math

import jax


def dot_general_2d(lhs, rhs, dimension_numbers, precision=None, preferred_element_type=None,
                   out_sharding=None):
  """`jax.lax.dot_general`, with a dense layer's contraction done on 2-D operands.

  A drop-in `dot_general` (e.g. for `nnx.Linear(dot_general=...)`): when lhs
  [..., d_in] contracts its last axis with rhs's first and there are no batch axes,
  lhs's leading axes are merged into one before the matmul and split after it.
  Every other contraction, and explicit out_sharding, go to `jax.lax.dot_general`
  unchanged.
  """
  kwargs = dict(precision=precision, preferred_element_type=preferred_element_type)
  (lhs_contract, rhs_contract), (lhs_batch, rhs_batch) = dimension_numbers
  is_dense = (tuple(lhs_contract) == (lhs.ndim - 1,) and tuple(rhs_contract) == (0,)
              and not lhs_batch and not rhs_batch)
  if not is_dense or lhs.ndim <= 2 or out_sharding is not None or math.prod(lhs.shape[:-1]) == 0:
    return jax.lax.dot_general(lhs, rhs, dimension_numbers, out_sharding=out_sharding, **kwargs)
  flat = lhs.reshape((-1, lhs.shape[-1]))
  out = jax.lax.dot_general(flat, rhs, (((1,), (0,)), ((), ())), **kwargs)
  return out.reshape(lhs.shape[:-1] + rhs.shape[1:])


def dense(x, kernel, bias=None):
  """x [..., d_in] @ kernel [d_in, ...] (+ bias), as one 2-D matmul."""
  y = dot_general_2d(x, kernel, (((x.ndim - 1,), (0,)), ((), ())))
  return y if bias is None else y + bias
