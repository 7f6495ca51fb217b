"""Per-token log-likelihood, perplexity and the paper's degradation Delta.

Delta(x, S) = log10(PPL_{M-S}(x) / PPL_M(x)) = (mean NLL masked - mean NLL clean) / ln 10.
Losses are computed in float32 whatever the model's dtype; non-finite values are kept,
never averaged away: a row with any non-finite token loss has a non-finite mean.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..errors import ParameterError

LN10 = math.log(10.0)


def token_nll(model: torch.nn.Module, input_ids: torch.Tensor) -> torch.Tensor:
    """(B, T) token ids -> (B, T-1) negative log-likelihood of each next token, float32.

    No KV cache: nothing reuses it, and blocks that a shared prefix skips (lesion.masking.ablation)
    would leave it incomplete."""
    return nll_of_logits(model(input_ids=input_ids, use_cache=False).logits, input_ids)


def nll_of_logits(logits: torch.Tensor, input_ids: torch.Tensor) -> torch.Tensor:
    """(B, T, V) logits of (B, T) ids -> (B, T-1) next-token NLL, float32."""
    return F.cross_entropy(logits[:, :-1].float().transpose(1, 2), input_ids[:, 1:], reduction="none")


def mean_nll(model: torch.nn.Module, input_ids: torch.Tensor, rows: int = 1) -> torch.Tensor:
    """Mean next-token NLL of one (1, T) text, evaluated on ``rows`` copies -> (rows,) float64."""
    with torch.inference_mode():
        return token_nll(model, input_ids.expand(rows, -1)).double().mean(dim=1)


def perplexity(nll: float) -> float:
    if math.isnan(nll):
        return math.nan
    return math.exp(nll) if nll < 709.0 else math.inf


def delta(nll_masked: float, nll_clean: float) -> float:
    """log10 perplexity ratio; NaN (a model that emits NaN) counts as an infinite collapse."""
    if not math.isfinite(nll_masked):
        return math.inf
    return (nll_masked - nll_clean) / LN10


def check_epsilon(epsilon: float) -> None:
    """A Delta threshold must be one a set can cross: finite and above zero."""
    number = isinstance(epsilon, (int, float)) and not isinstance(epsilon, bool)
    if not (number and epsilon > 0 and math.isfinite(epsilon)):
        raise ParameterError("epsilon", f"must be a finite number > 0 (got {epsilon!r}): the paper uses 1")
