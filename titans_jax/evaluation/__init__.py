"""Evaluation harnesses: long-context recall (S-NIAH) by context length x needle depth."""

from titans_jax.evaluation.recall import (RecallResult, evaluate_recall, format_table,
                                          save_heatmap)

__all__ = ["RecallResult", "evaluate_recall", "format_table", "save_heatmap"]
