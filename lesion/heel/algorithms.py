"""The smallest heel lesion can find: screen a multi-signal pool, select greedily, prune, certify.

The paper's answer is the first top-n of one ranking that crosses epsilon, a prefix that
is long on most models. Here instead:

1. **pool**: the union of several signals' top-m neurons (:mod:`lesion.signals`);
2. **screen**: Delta of every pool neuron masked alone, one mask per batch row;
3. **select** (``--strategy``):
   - ``greedy``: forward selection: add the candidate that raises Delta most, re-screening
     the ``rescreen`` most promising others with the current set masked, until Delta >= epsilon;
   - ``topk``: mask the top-k by single Delta for k = 1, 2, ... (the first crossing);
   - ``prefix``: the paper's greedy prefix of the noise ranking;
4. **prune** (``--prune``): ``elimination`` = delta debugging (drop halves, quarters, ... of a
   large set, each level one batched forward) then one backward-elimination pass, least
   important first; O(n) rows, not O(n^2). ``best-drop`` is the O(n^2) pruning of
   ``lesion minimal``. Either ends with a check that no single member can go: the set is
   irreducible;
5. **certify**: every subset of the top-p screened candidates smaller than the answer is
   tried (smallest first): either a smaller set is found and becomes the answer, or no set
   of the top p smaller than it reaches epsilon.

The objective over several texts is the worst text's Delta (a heel that collapses the
model on every input) or the mean. Every evaluated set is cached, so no set costs twice.
"""
from __future__ import annotations

import math
import time
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from itertools import combinations, islice
from math import comb
from typing import Callable, Iterator, Sequence

from ..anytime import check_time_budget
from ..errors import BudgetExhausted, LesionError, ParameterError
from ..metrics import LN10, check_epsilon, perplexity
from ..neurons import Neuron
from ..options import ABLATIONS, OBJECTIVES, PRUNERS, STRATEGIES, check_whole_number
from ..results import Certificate, Heel, Portfolio, Screen, Settings, Stage, Stopped, TextScore, TraceStep
from .scorer import SetScorer


def screen(score: SetScorer, pool: Sequence[Neuron], epsilon: float = math.inf,
           limit: Callable[[int], int] | None = None) -> list[tuple[Neuron, float]]:
    """Each candidate alone, highest Delta first (ties in pool order), in growing chunks that stop
    once one neuron alone reaches ``epsilon``: then no smaller heel exists and the rest is not needed.
    ``limit(screened so far)`` says how much of the pool to screen (the budget's share)."""
    deltas: list[float] = []
    width = 8
    while len(deltas) < min(len(pool), limit(len(deltas)) if limit else len(pool)):
        end = min(len(deltas) + width, limit(len(deltas)) if limit else len(pool))
        deltas += score([[n] for n in pool[len(deltas):end]])
        if max(deltas) >= epsilon:
            break
        width *= 2
    return _by_delta(pool, deltas)


def _by_delta(pool: Sequence[Neuron], deltas: Sequence[float]) -> list[tuple[Neuron, float]]:
    order = sorted(range(len(deltas)), key=lambda i: (-_finite(deltas[i]), i))
    return [(pool[i], deltas[i]) for i in order]


def screened_so_far(score: SetScorer, pool: Sequence[Neuron]) -> list[tuple[Neuron, float]]:
    """The pool neurons already evaluated alone (a screen cut short keeps what it ran)."""
    done = [n for n in pool if frozenset([n]) in score.known]
    return _by_delta(done, [score.aggregate(score.known[frozenset([n])]) for n in done])


SCREEN_SHARE = 0.4  # of the rows a budget affords, what the screen may take (the rest builds the set)
SCREEN_TOP = 20  # neurons of the screen shown in a heel (screen.top), strongest first


def screen_order(pool: Sequence[Neuron], estimate: dict[Neuron, float] | None) -> list[Neuron]:
    """The pool in screening order: alternately the next by the first-order estimate and the next
    of the signals' interleaved order, so a screen the budget cuts short holds both the
    estimate's picks and every signal's best (the estimate misses neurons whose effect is far
    from linear, as at the attention sink)."""
    if not estimate:
        return list(pool)
    ranked = sorted(pool, key=lambda n: -_finite(estimate.get(n, 0.0)))  # stable: ties keep pool order
    order: dict[Neuron, None] = {}
    for a, b in zip(ranked, pool):
        order.setdefault(a)
        order.setdefault(b)
    return list(order)


def spearman(xs: Sequence[float], ys: Sequence[float]) -> float | None:
    """Spearman rank correlation (average ranks for ties); None below 3 pairs or with no spread."""
    if len(xs) < 3:
        return None
    rx, ry = _ranks([_finite(x) for x in xs]), _ranks([_finite(y) for y in ys])
    mx, my = sum(rx) / len(rx), sum(ry) / len(ry)
    cov = sum((a - mx) * (b - my) for a, b in zip(rx, ry))
    var = math.sqrt(sum((a - mx) ** 2 for a in rx) * sum((b - my) ** 2 for b in ry))
    return cov / var if var > 0 else None


def _ranks(values: Sequence[float]) -> list[float]:
    order = sorted(range(len(values)), key=lambda i: values[i])
    ranks = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2
        i = j + 1
    return ranks


def _finite(x: float) -> float:
    return 1e300 if x != x else x  # NaN losses count as a collapse, as metrics.delta does


def greedy_selection(score: SetScorer, screened: Sequence[tuple[Neuron, float]], epsilon: float,
                     rescreen: int = 32, max_size: int = 64, trace: list | None = None) -> list[Neuron]:
    """Forward selection: each step masks the candidate that raises Delta most given the set so
    far; only the ``rescreen`` candidates with the best latest value are re-evaluated."""
    latest = {n: d for n, d in screened}
    current: list[Neuron] = []
    value = -math.inf
    while len(current) < max_size and latest:
        consider = sorted(latest, key=lambda n: -_finite(latest[n]))[:step_width(score, rescreen)]
        values = score([current + [n] for n in consider]) if current else [latest[n] for n in consider]
        latest.update(zip(consider, values))
        pick = max(range(len(consider)), key=lambda i: (_finite(values[i]), -i))
        current.append(consider[pick])
        value = values[pick]
        del latest[consider[pick]]
        if trace is not None:
            trace.append({"stage": "greedy", "added": str(consider[pick]), "size": len(current), "delta": value,
                          "rescreened": len(consider) if len(current) > 1 else 0})
        if value >= epsilon:
            break
    return current


def step_width(score: SetScorer, rescreen: int) -> int:
    """Candidates one greedy step re-evaluates: ``rescreen``, or a quarter of the rows the budget
    still affords when that is fewer (at least 4), so a tight budget still takes several steps."""
    affordable = score.rows_affordable()
    return rescreen if math.isinf(affordable) else max(4, min(rescreen, int(affordable / 4)))


def first_crossing(score: SetScorer, order: Sequence[Neuron], epsilon: float, trace: list | None = None,
                   label: str = "topk") -> list[Neuron]:
    """The first prefix of ``order`` with Delta >= epsilon (exact: every n is tried in order),
    evaluated in growing batches (1, 2, 4, ... prefixes per call); [] if none crosses."""
    width, n = 1, 0
    while n < len(order):
        sizes = list(range(n + 1, min(n + width, len(order)) + 1))
        values = score([list(order[:k]) for k in sizes])
        for k, v in zip(sizes, values):
            if trace is not None:
                trace.append({"stage": label, "size": k, "delta": v})
            if v >= epsilon:
                return list(order[:k])
        n, width = sizes[-1], min(2 * width, 64)
    return []


def prune_elimination(score: SetScorer, members: Sequence[Neuron], epsilon: float,
                      importance: dict[Neuron, float], trace: list | None = None) -> list[Neuron]:
    """Delta debugging while the set is large, then one backward-elimination pass."""
    current = list(members)
    chunks = 2
    while len(current) >= 8 and len(current) // chunks >= 4:
        size = math.ceil(len(current) / chunks)
        parts = [current[i:i + size] for i in range(0, len(current), size)]
        rests = [[n for n in current if n not in set(p)] for p in parts]
        values = score(rests)
        hits = [i for i, v in enumerate(values) if v >= epsilon]
        if hits:
            best = max(hits, key=lambda i: (values[i], -i))
            current = rests[best]
            chunks = max(chunks - 1, 2)
            _log(trace, "ddmin", size=len(current), delta=values[best], dropped=len(parts[best]))
        else:
            chunks *= 2
    for n in sorted(current, key=lambda n: (_finite(importance.get(n, math.inf)), str(n))):
        if len(current) == 1:
            break
        rest = [m for m in current if m != n]
        value = score([rest])[0]
        if value >= epsilon:
            current = rest
        _log(trace, "eliminate", neuron=str(n), delta_without=value, dropped=value >= epsilon)
    return make_irreducible(score, current, epsilon, trace)


def prune_best_drop(score: SetScorer, members: Sequence[Neuron], epsilon: float,
                    trace: list | None = None) -> list[Neuron]:
    """Each round tries every leave-one-out and drops the one that keeps Delta highest (O(n^2) rows)."""
    current = list(members)
    while len(current) > 1:
        rests = [current[:i] + current[i + 1:] for i in range(len(current))]
        values = score(rests)
        best = max(range(len(rests)), key=lambda i: (_finite(values[i]), -i))
        if values[best] < epsilon:
            break
        _log(trace, "best-drop", neuron=str(current[best]), delta_without=values[best])
        current = rests[best]
    return current


def make_irreducible(score: SetScorer, members: Sequence[Neuron], epsilon: float,
                     trace: list | None = None) -> list[Neuron]:
    """Drop members while some single one can go (one batched forward per round): dropping one
    member can make an earlier-kept one dispensable, since Delta is not monotone."""
    current = list(members)
    while len(current) > 1:
        rests = [current[:i] + current[i + 1:] for i in range(len(current))]
        values = score(rests)
        hits = [i for i, v in enumerate(values) if v >= epsilon]
        if not hits:
            break
        best = max(hits, key=lambda i: (values[i], -i))
        _log(trace, "irreducible-check", neuron=str(current[best]), delta_without=values[best])
        current = rests[best]
    return current


def _log(trace: list | None, stage: str, **fields) -> None:
    if trace is not None:
        trace.append({"stage": stage, **fields})


def certify(score: SetScorer, screened: Sequence[tuple[Neuron, float]], found: Sequence[Neuron],
            epsilon: float, pool: int, batch: int = 64) -> dict:
    """Try every subset of the top ``pool`` screened neurons smaller than ``found``, smallest first.
    Returns the best Delta per size and the smaller set if one reaches epsilon."""
    top = [n for n, _ in screened[:pool]]
    best_by_size: dict[int, float] = {1: max((d for _, d in screened), default=-math.inf)}
    smaller, rows_before = None, score.rows
    if len(found) > 1 and best_by_size[1] >= epsilon:
        smaller = [screened[0][0]]
    for size in range(2, len(found) if smaller is None else 2):
        subsets = combinations(top, size)
        best_by_size[size] = -math.inf
        while chunk := [list(c) for c in islice(subsets, batch)]:
            values = score(chunk)
            best_by_size[size] = max(best_by_size[size], *map(_finite, values))
            hits = [i for i, v in enumerate(values) if v >= epsilon]
            if hits:
                smaller = chunk[max(hits, key=lambda i: (values[i], -i))]
                break
        if smaller is not None:
            break
    return {"pool": len(top), "sizes_tried": sorted(best_by_size), "best_delta_by_size": best_by_size,
            "smaller_set": None if smaller is None else [str(n) for n in smaller],
            "rows": score.rows - rows_before,
            "certified": smaller is None and len(found) > 0,
            "subsets": sum(comb(len(top), s) for s in range(2, len(found)))}


def certify_pool_for(found: int, rows: int, cap: int = 30) -> int:
    """The largest top-p whose subsets of sizes 2..found-1 fit in ``rows``."""
    p = 0
    while p < cap and sum(comb(p + 1, s) for s in range(2, found)) <= rows:
        p += 1
    return p


@dataclass
class SearchPlan:
    """What to search with: every option of :func:`find_smallest_heel` in one place."""
    epsilon: float = 1.0
    strategy: str = "greedy"
    prune: str = "elimination"
    ablation: str = "zero"
    objective: str = "worst"
    rescreen: int = 32
    max_size: int = 64
    certify_rows: int = 2000
    max_rows: int = 20000
    screen: int = 0  # pool neurons screened alone; 0: all that the budget's screen share affords
    time_budget: float | None = None  # seconds for the whole search (the scorer holds the deadline)

    def check(self) -> None:
        check_epsilon(self.epsilon)
        for name, known in (("strategy", STRATEGIES), ("prune", PRUNERS), ("ablation", ABLATIONS),
                            ("objective", OBJECTIVES)):
            if getattr(self, name) not in known:
                raise ParameterError(name, f"must be one of {', '.join(known)} (got {getattr(self, name)!r})")
        for name, least in (("rescreen", 1), ("max_size", 1), ("max_rows", 1), ("certify_rows", 0), ("screen", 0)):
            check_whole_number(name, getattr(self, name), least, hint="; 0 sizes it to the budget" if name == "screen"
                               else "")
        check_time_budget(self.time_budget)


STOPS = {"budget": "the budget (`max_rows` / `time_budget`)", "interrupted": "an interrupt (Ctrl-C / SIGTERM)"}


@dataclass(frozen=True)
class PortfolioPart:
    """A restricted sub-search of the portfolio: the neurons of some sites only (a component group),
    with its own pool and first-order estimate. Every part runs on the one scorer: a set any part
    evaluated costs nothing again, and all share one row and time budget."""
    name: str
    pool: tuple[Neuron, ...]
    estimate: dict[Neuron, float] | None = field(default=None, compare=False)


PART_SHARE = 2 / 3  # of the rows left, what the next part may take (the rest: later parts and the certificate)


def find_smallest_heel(score: SetScorer, pool: Sequence[Neuron], plan: SearchPlan,
                       prefix_order: Callable[[], Sequence[Neuron]] | None = None,
                       model_name: str = "", settings: Settings | None = None, pool_info: dict | None = None,
                       text_info: Sequence[dict] = (), progress: Callable[[str], None] | None = None,
                       estimate: dict[Neuron, float] | None = None,
                       parts: Sequence[PortfolioPart] = ()) -> Heel:
    """Screen ``pool``, select, prune and certify under ``score``; see the module docstring.

    ``parts``: the portfolio's restricted sub-searches, run after the search of the whole ``pool``
    when they pay (its answer is larger than one neuron, or none reached epsilon), each within a
    share of the rows left; a part's answer replaces the best only when smaller, and the smallest
    is certified (``portfolio`` in the result says which part found it).

    Anytime: whatever stops it (``score``'s row or time budget, KeyboardInterrupt) the result is
    the best set evaluated so far (``stopped`` says why), with the screen, stages and trace so
    far. An interrupt before any set was evaluated propagates. ``estimate`` (a first-order
    Delta estimate per pool neuron) orders the screen and is checked against it (Spearman)."""
    plan.check()
    if not pool:
        raise ParameterError("per_signal", "gives an empty candidate pool: widen `signals` or raise it")
    started = time.perf_counter()
    trace: list[dict] = []
    stages: list[dict] = []
    order = screen_order(pool, estimate)

    def stage(name: str, fn: Callable[[], list[Neuron]]) -> list[Neuron]:
        if progress:
            progress(name)
        score.stage = name
        rows, start = score.rows, time.perf_counter()
        entry = {"stage": name, "rows": 0, "seconds": 0.0, "size": 0, "delta": None}
        stages.append(entry)
        found: list[Neuron] | None = None
        known_before = len(score.known)  # sets are added in order: this stage's are those after
        try:
            found = fn()
        finally:  # a stage cut short is recorded with what it ran
            entry.update(rows=score.rows - rows, seconds=round(time.perf_counter() - start, 3))
            if not found and name.rsplit(": ", 1)[-1] != "screen":
                # reached nothing, or cut short: the best set it evaluated (the screen's are single neurons)
                built = [(_finite(score.aggregate(d)), -len(k))
                         for k, d in islice(score.known.items(), known_before, None) if k]
                if built:
                    delta, size = max(built)
                    entry.update(size=-size, delta=delta)
        if found:
            entry.update(size=len(found), delta=score([found])[0])
        return found

    main = _search_part(score, order, plan, stage, prefix_order, trace)
    answer, stopped, sizing = main.answer, main.stopped, main.sizing
    orders = [order]
    portfolio: dict | None = None
    if parts:
        portfolio = {"found_by": "all", "parts": [main.record("all", len(pool))]}
        answer, stopped = _run_parts(score, parts, plan, stage, answer, stopped, portfolio, orders, trace)
    screened = screened_so_far(score, [n for o in orders for n in o]) if len(orders) > 1 else (
        main.screened or screened_so_far(score, order))
    if stopped == "reached":
        certificate = _certify_stage(score, screened, answer, plan, stage)
        stopped = certificate.pop("stopped", stopped)
    elif stopped == "not reached":
        certificate = _no_heel_evidence(score, screened, plan)
        stopped = certificate.pop("stopped", stopped)
        answer = score.best_found(plan.epsilon)
    else:
        answer = score.best_found(plan.epsilon)
        certificate = {"certified": False, "smaller_set": None, "best_delta_by_size": score.best_by_size(),
                       "note": f"stopped by {STOPS[stopped]}: the best set evaluated so far, neither pruned to "
                               "irreducible nor certified; `resume` continues the search"}
    if certificate.get("smaller_set"):
        answer, stopped = [Neuron.parse(s) for s in certificate["smaller_set"]], "reached"
        if portfolio is not None:
            portfolio["found_by"] = "certificate"
    # Deltas read from a resumed journal are re-scored, not believed, where the result states them:
    # what the answer rests on, and the screen's table (a forged single would be shown as measured)
    score.confirm(rests_on(score, answer) + [[n] for n, _ in screened[:SCREEN_TOP]])
    info = {**(pool_info or {}), "order": "estimate and signals, alternately" if estimate else "signals",
            **({"confirmed_sets": score.confirmed} if score.confirmed else {}),
            **({"sizing": sizing} if sizing else {}), **_estimate_check(estimate, screened)}
    heel = _heel(score, answer, plan, stopped, screened, certificate, stages, trace, model_name,
                 settings or Settings(), info, text_info, len(pool), time.perf_counter() - started)
    return heel if portfolio is None else replace(heel, portfolio=Portfolio.from_dict(portfolio))


@dataclass
class _PartRun:
    """What one part of the portfolio (or the whole search) found, and how it ended."""
    answer: list[Neuron]
    stopped: str  # reached, not reached, budget, interrupted
    screened: list[tuple[Neuron, float]]
    sizing: dict
    rows: int
    seconds: float

    def record(self, name: str, pool: int, **extra) -> dict:
        return {"name": name, "pool": pool, "screened": len(self.screened), "size": len(self.answer),
                "reached": self.stopped == "reached", "stopped": self.stopped, "rows": self.rows,
                "seconds": round(self.seconds, 3), **extra}


def _search_part(score: SetScorer, order: Sequence[Neuron], plan: SearchPlan, stage, prefix_order,
                 trace: list, label: str = "") -> _PartRun:
    """Screen, select and prune one pool; ``label`` names a portfolio part in its stages and trace."""
    rows, start = score.rows, time.perf_counter()
    answer: list[Neuron] = []
    stopped = "reached"
    screened: list[tuple[Neuron, float]] = []
    sizing: dict = {}
    steps: list[dict] = []
    named = (lambda name: f"{label}: {name}") if label else (lambda name: name)
    try:
        screened = _screen_stage(score, order, stage, plan, sizing, named("screen"))
        importance = dict(screened)
        answer = stage(named(plan.strategy), lambda: _select(score, screened, plan, prefix_order, steps))
        if not answer:
            stopped = "not reached"
        elif plan.prune == "elimination":
            answer = stage(named("prune"), lambda: prune_elimination(score, answer, plan.epsilon, importance, steps))
        elif plan.prune == "best-drop":
            answer = stage(named("prune"), lambda: make_irreducible(
                score, prune_best_drop(score, answer, plan.epsilon, steps), plan.epsilon, steps))
    except BudgetExhausted:
        stopped = "budget"
    except KeyboardInterrupt:
        if not score.known:
            raise
        stopped = "interrupted"
    finally:
        trace.extend({**step, "part": label} if label else step for step in steps)
    return _PartRun(answer if stopped == "reached" else [], stopped, screened or screened_so_far(score, order),
                    sizing, score.rows - rows, time.perf_counter() - start)


def _run_parts(score: SetScorer, parts: Sequence[PortfolioPart], plan: SearchPlan, stage, answer: list[Neuron],
               stopped: str, portfolio: dict, orders: list, trace: list) -> tuple[list[Neuron], str]:
    """The portfolio's parts after the whole search, while they pay: each searches its pool within
    PART_SHARE of the rows left, and its answer wins when it is smaller than the best so far."""
    for part in parts:
        record = {"name": part.name, "pool": len(part.pool)}
        why = _why_not(plan, answer, stopped, part)
        if why is None and score.rows_affordable() < 1:
            why = "the budget was spent"
        if why is not None:
            portfolio["parts"].append({**record, "ran": False, "why": why})
            continue
        order = screen_order(part.pool, part.estimate)
        orders.append(order)
        # Greedy is not capped below the best size (a larger greedy set can prune to a smaller one), except
        # when only a single neuron can win: then the screen is the whole search (greedy could take only a
        # screened single), and a certificate of a pair costs nothing, so the last part may take every row left.
        single = stopped == "reached" and len(answer) == 2
        part_plan = replace(plan, screen=len(part.pool) if single else 0, max_size=1 if single else plan.max_size)
        share = 1.0 if single and part is parts[-1] else PART_SHARE
        with _allowance(score, score.rows_affordable() * share):
            run = _search_part(score, order, part_plan, stage, None, trace, part.name)
        portfolio["parts"].append(run.record(part.name, len(part.pool), ran=True))
        # A part cut short (its share of the rows, an interrupt) may still have evaluated a smaller set
        # that reaches epsilon: the best set so far, unpruned.
        found = run.answer if run.stopped == "reached" else score.best_found(plan.epsilon)
        if found and score([found])[0] >= plan.epsilon and (stopped != "reached" or len(found) < len(answer)):
            answer, stopped = found, "reached"
            portfolio["found_by"] = part.name
        if run.stopped == "interrupted":
            return answer, "interrupted"
    return answer, stopped


def _why_not(plan: SearchPlan, answer: list[Neuron], stopped: str, part: PortfolioPart) -> str | None:
    """Why a part would not pay, or None when it may."""
    if stopped not in ("reached", "not reached"):
        return f"the search was stopped by {STOPS[stopped]}"
    if plan.strategy == "prefix":
        return "the prefix strategy follows one ranking of every neuron"
    if stopped == "reached" and len(answer) <= 1:
        return "the heel is one neuron: nothing smaller exists"
    if not part.pool:
        return "no signal scores a neuron of this part"
    return None


@contextmanager
def _allowance(score: SetScorer, rows: float) -> Iterator[None]:
    """Within the block the scorer's row budget ends ``rows`` (per text) from now, or sooner."""
    before = score.max_rows
    score.max_rows = min(before, score.rows + int(rows) * score.texts)
    try:
        yield
    finally:
        score.max_rows = before


def rests_on(score: SetScorer, answer: Sequence[Neuron]) -> list[list[Neuron]]:
    """The sets whose Deltas a result states or rests on: the answer, the answer less each of its
    neurons (it is irreducible), each of its neurons alone, and the best set of every size (the
    certificate's best Delta by size)."""
    sets = [list(answer), *([m for m in answer if m != n] for n in answer), *([n] for n in answer)]
    best: dict[int, tuple[float, frozenset]] = {}
    for key, deltas in score.known.items():
        value = _finite(score.aggregate(deltas))
        if key and (len(key) not in best or value > best[len(key)][0]):
            best[len(key)] = (value, key)
    return sets + [sorted(key) for _, key in best.values()]


def _estimate_check(estimate: dict[Neuron, float] | None, screened) -> dict:
    """How well the first-order estimate ranked the candidates that were then masked alone."""
    if not estimate:
        return {}
    pairs = [(estimate[n], d) for n, d in screened if n in estimate]
    rho = spearman([e for e, _ in pairs], [d for _, d in pairs])
    return {"estimate": {"signal": "attribution", "masked": len(pairs),
                         "spearman": None if rho is None else round(rho, 4)}}


def _screen_stage(score, order, stage, plan: SearchPlan, sizing: dict,
                  name: str = "screen") -> list[tuple[Neuron, float]]:
    holder: list = []

    def limit(done: int) -> int:
        if plan.screen:
            return plan.screen
        if done and "screen" not in sizing:
            # Sized once, after the first chunk timed a batch of masked rows.
            affordable = score.rows_affordable()
            share = affordable * SCREEN_SHARE
            sizing.update(row_seconds=round(score.row_seconds(), 4),
                          affordable_rows=None if math.isinf(affordable) else int(affordable + done),
                          screen=len(order) if share >= len(order) - done else done + int(share))
        return sizing.get("screen", len(order))

    def run() -> list[Neuron]:
        try:
            holder.extend(screen(score, order, plan.epsilon, limit))
        except (BudgetExhausted, KeyboardInterrupt):
            holder.extend(screened_so_far(score, order))
            raise
        return []
    stage(name, run)
    return holder


def _select(score: SetScorer, screened, plan: SearchPlan, prefix_order, trace) -> list[Neuron]:
    if plan.strategy == "greedy":
        found = greedy_selection(score, screened, plan.epsilon, plan.rescreen, plan.max_size, trace)
        return found if score([found])[0] >= plan.epsilon else []
    if plan.strategy == "topk":
        return first_crossing(score, [n for n, _ in screened][:plan.max_size], plan.epsilon, trace, "topk")
    if prefix_order is None:
        raise LesionError("the prefix strategy needs a ranking")
    return first_crossing(score, list(prefix_order()), plan.epsilon, trace, "prefix")


def _certify_stage(score, screened, answer, plan: SearchPlan, stage) -> dict:
    if len(answer) <= 1:
        return {"pool": 0, "certified": bool(answer), "smaller_set": None, "rows": 0,
                "best_delta_by_size": {1: screened[0][1]} if screened else {},
                "note": "a single neuron: nothing smaller exists"}
    pool = certify_pool_for(len(answer), _rows_left(score, plan.certify_rows))
    result: dict = {}

    def run() -> list[Neuron]:
        try:
            result.update(certify(score, screened, answer, plan.epsilon, pool))
        except BudgetExhausted:
            result.update({"pool": pool, "certified": False, "smaller_set": None, "stopped": "budget",
                           "note": "stopped by the budget while certifying: irreducible, not certified"})
        except KeyboardInterrupt:
            result.update({"pool": pool, "certified": False, "smaller_set": None, "stopped": "interrupted",
                           "note": "interrupted while certifying: irreducible, not certified"})
        return [Neuron.parse(s) for s in result.get("smaller_set") or []] or list(answer)
    stage("certify", run)
    return result


def _rows_left(score: SetScorer, cap: int) -> int:
    """Rows the certificate may take: ``cap``, or fewer when the budget affords fewer."""
    return max(0, int(min(cap, score.rows_affordable() * 0.9)))


def _no_heel_evidence(score: SetScorer, screened, plan: SearchPlan) -> dict:
    """No set reached epsilon: say how far the best single and the best pair of the top
    screened neurons get, so that "no small heel" is a measured statement."""
    pool = certify_pool_for(3, _rows_left(score, max(plan.certify_rows, 0)))
    if not screened:
        return {"note": "nothing was screened"}
    try:
        evidence = certify(score, screened, [None, None, None], plan.epsilon, pool)
    except (BudgetExhausted, KeyboardInterrupt) as stop:
        return {"note": "no set reached epsilon; the budget ran out before the best pairs were tried",
                "best_delta_by_size": score.best_by_size(), "certified": False,
                "stopped": "budget" if isinstance(stop, BudgetExhausted) else "interrupted"}
    return {**evidence, "certified": False,
            "note": f"no set reached epsilon; best single Delta {screened[0][1]:.3g}, best pair of the top "
                    f"{evidence['pool']} screened {evidence['best_delta_by_size'].get(2, math.nan):.3g}"}


def _heel(score: SetScorer, answer, plan: SearchPlan, stopped, screened, certificate, stages, trace,
          model_name, settings, pool_info, text_info, pool_size: int, seconds: float) -> Heel:
    per_text = score.per_text([answer])[0] if answer else tuple(-math.inf for _ in range(score.texts))
    objective = score.aggregate(per_text) if answer else -math.inf
    texts = tuple(TextScore(**info, baseline_ppl=perplexity(clean), delta=d,
                            masked_ppl=perplexity(clean + d * LN10) if answer else None)
                  for info, clean, d in zip(_pad(text_info, score.texts), score.clean, per_text))
    if plan.objective == "worst" and answer:
        which = min(range(len(per_text)), key=lambda i: per_text[i])
        clean = score.clean[which]
    else:
        clean = sum(score.clean) / len(score.clean)  # geometric mean of the perplexities
    reached = bool(answer) and objective >= plan.epsilon
    if stopped == "reached" and not reached:
        stopped = "not reached"
    screen_info = {**pool_info, "pool": pool_size, "screened": len(screened),
                   "top": [{"neuron": str(n), "delta": d} for n, d in screened[:SCREEN_TOP]],
                   "heel_alone": {str(n): score.aggregate(score.known[frozenset([n])]) for n in answer
                                  if frozenset([n]) in score.known}}
    return Heel(model_name, tuple(answer), reached, objective, perplexity(clean),
                perplexity(clean + objective * LN10) if answer else math.nan, score.rows, texts,
                tuple(Stage(**s) for s in stages), Screen.of(screen_info), Certificate.of(certificate),
                tuple(TraceStep.of(t) for t in trace),
                Stopped(stopped), settings.merged({k: getattr(plan, k) for k in plan.__dataclass_fields__}),
                seconds=round(seconds, 3))


def _pad(info: Sequence[dict], n: int) -> list[dict]:
    return list(info) + [{} for _ in range(n - len(info))]
