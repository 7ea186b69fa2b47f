"""Grain data: token sources, synthetic tasks and the input pipeline."""

from titans_jax.data.pipeline import make_batches, make_iterator
from titans_jax.data.registry import SOURCES, make_source
from titans_jax.data.sources import (BYTE_VOCAB_SIZE, ByteTextSource, RandomTokenSource,
                                     TfdsTextSource, example_from_tokens)

__all__ = ["BYTE_VOCAB_SIZE", "SOURCES", "ByteTextSource", "RandomTokenSource", "TfdsTextSource",
           "example_from_tokens", "make_batches", "make_iterator", "make_source"]
