"""Evaluation harnesses, each a Python API and a CLI on a workdir's checkpoint:

recall      S-NIAH accuracy by context length x needle depth (table, JSON, heatmap)
streaming   loss by position over documents of any length, streamed in pieces
traces      per-token gates, surprise and retention of the neural memory, plotted
zero_shot   zero-shot tasks scored as lm-evaluation-harness 0.4.x scores them
"""

from titans_jax.evaluation.recall import (RecallResult, evaluate_recall, format_table,
                                          save_heatmap)

__all__ = ["RecallResult", "evaluate_recall", "format_table", "save_heatmap"]
