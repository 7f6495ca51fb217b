"""Stage 2: causal identification by greedy masking of the top-n of a ranking.

Two ways to reach the paper's answer, the first n with Delta(top-n) >= epsilon:

- ``linear`` (default): n = step, 2*step, ... in order; exact, as in the paper.
- ``gallop``: n = 1, 2, 4, 8, ... (in steps) until one crosses, then n in order inside the
  last bracket (previous gallop point, crossing point]. It needs about 2 log2(n*) + n*/2
  rows instead of n*, and finds the linear answer whenever no n below the bracket crosses,
  which holds when Delta is monotone in n. Delta is not monotone in general (the authors'
  logs), so the result says what was checked: the bracket, and whether Delta fell (by more
  than FALL_TOLERANCE) between gallop points (then a crossing below the bracket may have
  been missed: run ``linear``) or inside the bracket.
"""
from __future__ import annotations

from typing import Iterator, Sequence

import torch
from tqdm.auto import tqdm

from ..masking.ablation import baseline_nll, masked_nll
from ..errors import LesionError, ParameterError
from ..masking.metrics import check_epsilon, delta, perplexity
from ..model.neurons import Neuron, SiteIndex
from ..runtime.options import STAGE2, check_whole_number
from ..results import CriticalSet, Settings, Step

# A fall of Delta smaller than this between evaluated n is float noise around a flat stretch
# (Gemma 3's Delta wobbles by 0.001 around 0 for its first 8 neurons), not evidence of a
# crossing that came and went.
FALL_TOLERANCE = 0.01

def _growing_chunks(sizes: list[int], batch_size: int) -> Iterator[list[int]]:
    """1, 2, 4, ... sizes per forward: a collapse at n=1 costs one row, a long search few forwards."""
    width, i = 1, 0
    while i < len(sizes):
        yield sizes[i:i + width]
        i += width
        width = min(2 * width, batch_size)


def _fell(deltas: list[float]) -> bool:
    return any(later < earlier - FALL_TOLERANCE for earlier, later in zip(deltas, deltas[1:]))


def check_options(epsilon: float = 1.0, step: int = 1, max_neurons: int = 1000, stage2: str = "linear") -> None:
    """Stage 2's options (see :func:`find_critical_set`), checked without a model."""
    check_epsilon(epsilon)
    for name, value in (("step", step), ("max_neurons", max_neurons)):
        check_whole_number(name, value, 1)
    if step > max_neurons:
        raise ParameterError("step", f"{step} is larger than `max_neurons` {max_neurons}: no set would be tried; "
                                     "lower it")
    if stage2 not in STAGE2:
        raise ParameterError("stage2", f"must be one of {', '.join(STAGE2)} (got {stage2!r})")


def find_critical_set(model: torch.nn.Module, input_ids: torch.Tensor, index: SiteIndex,
                      candidates: Sequence[Neuron], *, epsilon: float = 1.0, step: int = 1,
                      max_neurons: int = 1000, batch_size: int = 8, stage2: str = "linear", model_name: str = "",
                      settings: Settings | None = None, progress: bool = True) -> CriticalSet:
    """Mask the top n = step, 2*step, ... candidates; stop at the first Delta >= epsilon.

    Delta is not monotone in n, so the first crossing is the answer, as in the paper.
    When no n up to ``max_neurons`` crosses, the result has ``reached=False``, no neurons,
    and the Delta and perplexity of the best n tried. ``stage2="gallop"`` reaches the same
    answer in fewer rows when Delta is monotone (see the module notes); its bracket and
    whether Delta fell between the n it tried are in ``settings.gallop``.
    """
    check_options(epsilon, step, max_neurons, stage2)
    candidates = list(candidates)[:max_neurons]
    if not candidates:
        raise LesionError("the ranking is empty: rank some neurons first, or widen `components`")
    index.check(candidates)
    settings = settings or Settings()
    clean = baseline_nll(model, input_ids, settings.dtype or "")
    sizes = list(range(step, len(candidates) + 1, step))
    if sizes[-1] != len(candidates):
        sizes.append(len(candidates))
    evaluated: dict[int, Step] = {}  # n -> its step, up to each pass's first crossing
    rows = 1  # the baseline, then one per masked row run (a batch may run past its crossing)
    bar = tqdm(total=len(sizes), desc=f"stage 2: greedy masking ({stage2})", disable=not progress, leave=False)

    def first_crossing(ns: list[int], width: int) -> int | None:
        """Evaluate ``ns`` in order, in growing batches; the first n whose Delta >= epsilon."""
        nonlocal rows
        for chunk in _growing_chunks(ns, width):
            nlls = masked_nll(model, input_ids, index, [candidates[:n] for n in chunk])
            rows += len(chunk)
            bar.update(len(chunk))
            for n, nll in zip(chunk, nlls):
                evaluated[n] = Step(n, perplexity(nll), delta(nll, clean))
                if evaluated[n].delta >= epsilon:
                    return n
        return None

    try:
        if stage2 == "linear":
            crossing = first_crossing(sizes, batch_size)
        else:
            points = sorted({sizes[min(2 ** k - 1, len(sizes) - 1)] for k in range(len(sizes).bit_length() + 1)})
            high = first_crossing(points, batch_size)
            below = max((n for n in points if high is not None and n < high), default=0)
            crossing = first_crossing([n for n in sizes if below < n < (high or 0)], batch_size) or high
            visited = [n for n in points if high is None or n <= high]
            settings = settings.merged(gallop={
                "bracket": [below, high], "points": visited,
                # A fall between gallop points is the evidence that a crossing below the bracket
                # may have come and gone unseen; a fall inside the bracket is non-monotone too.
                "delta_fell_at_gallop_points": _fell([evaluated[n].delta for n in visited]),
                "delta_fell_inside_bracket": _fell([evaluated[n].delta for n in sorted(evaluated) if n > below]),
                "exact_if": f"no n <= {below} other than the gallop points crosses (true when Delta is "
                            "monotone in n); `stage2` linear checks every n"})
    finally:
        bar.close()
    trajectory = tuple(evaluated[n] for n in sorted(evaluated))
    if crossing is not None:
        hit = evaluated[crossing]
        return CriticalSet(model_name, tuple(candidates[:crossing]), perplexity(clean), hit.ppl, hit.delta, True,
                           trajectory, rows, settings)
    best = max(trajectory, key=lambda s: s.delta)
    return CriticalSet(model_name, (), perplexity(clean), best.ppl, best.delta, False, trajectory, rows, settings)
