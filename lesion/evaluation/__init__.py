"""Evaluation with and without a critical set: corpus perplexity, downstream tasks."""
