"""Grain data: token sources, synthetic tasks and the input pipeline."""

from titans_jax.data.pipeline import make_batches, make_iterator
from titans_jax.data.sources import (BYTE_VOCAB_SIZE, ByteTextSource, RandomTokenSource,
                                     TfdsTextSource, example_from_tokens)
from titans_jax.data.registry import SOURCES, make_source
