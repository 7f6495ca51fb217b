"""Evaluation with and without a critical set: corpus perplexity, downstream tasks."""
from .suite import EvalPlan, evaluate

__all__ = ["EvalPlan", "evaluate"]
