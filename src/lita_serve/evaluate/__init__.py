"""Temporal-localization evaluation: metrics (IoU, Recall@1, span policies) and the scorer."""

from lita_serve.evaluate.metrics import (
    RECALL_THRESHOLDS, SpanPolicy, answer_times, random_baseline_ious, recall_at_1, temporal_iou,
)
from lita_serve.evaluate.scorer import (
    Report, attach_predictions, read_predictions, read_prompt_file, read_rtl_eval, score, write_prompt_file,
)

__all__ = [
    "RECALL_THRESHOLDS", "SpanPolicy", "answer_times", "random_baseline_ious", "recall_at_1", "temporal_iou",
    "Report", "attach_predictions", "read_predictions", "read_prompt_file", "read_rtl_eval", "score",
    "write_prompt_file",
]
