"""``lesion search`` as a library call: the candidate pool from several signals, then the
search of :mod:`lesion.heel.run` under a :class:`~lesion.heel.scorer.SetScorer`."""
from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path
from typing import Callable, Mapping, Sequence

import torch

from ..runtime import distributed
from ..masking.ablation import baseline_nll
from ..errors import ParameterError
from ..model.neurons import Neuron, SiteIndex
from ..runtime.options import first_repeat
from ..results import Heel, NeuronProfile, Stopped, Transfer, TransferRow
from ..method.scorers import SCORERS, SIGNALS
from ..method.rankers import clean_activations
from ..method.study import Study, check_loaded
from ..texts.text import text_hash
from .plan import PortfolioPart, SearchPlan
from .run import find_smallest_heel
from .journal import SetJournal, check_journal
from .progress import SearchProgress
from .scorer import SetScorer
from .signals import candidate_pool, check_signals, portfolio_pools, signal_scores, top_neurons


def transfer_table(score_for_each: Sequence[SetScorer], heels: dict[str, Sequence[Neuron]]) -> dict:
    """Delta of every heel on every text: rows are heels, columns texts (one scorer per text)."""
    return {name: [s([list(neurons)])[0] if neurons else None for s in score_for_each]
            for name, neurons in heels.items()}


NOISE_FORWARDS = 2.0  # cost of one noise sample (noisy forward + differences) in bare forwards, measured
NOISE_SHARE = 0.25  # of a time budget, the most the noise signal may take before it is left out


def search_heel(lm, texts: Sequence[str] | Mapping[str, str], plan: SearchPlan, *,
                signals: Sequence[str] = tuple(SIGNALS),
                per_signal: int = 100, components: str | None = None,
                noise_options: dict | None = None, progress: bool = True,
                say: Callable[[str], None] | None = None, memo: dict | None = None,
                names: Sequence[str] = (), journal: str | Path | None = None, resume: bool = False,
                use_cache: bool = True) -> Heel:
    """``lesion search`` as a library call: pool from ``signals`` on every text, then
    :func:`find_smallest_heel` with the objective over all ``texts``. ``texts`` is a list (named
    ``names``, else text1, text2, ...) or a ``{name: text}`` mapping, such as
    :func:`lesion.corpus_passages` draws from a corpus. ``memo`` keeps each (signal, text)'s top
    list across calls on the same model. The prefix strategy walks the noise ranking, so it adds
    the noise signal when ``signals`` lacks it.

    ``plan.time_budget`` bounds the whole call (signals included): the noise signal is left out
    when its estimated cost, from one timed forward, would take more than a quarter of it.
    ``journal`` is a file every evaluated set is appended to; ``resume`` reads it first, so no
    set it holds is evaluated again (it must come from the same model, texts and ablation).
    ``use_cache``: read and write the noise signal's Stage 1 scores in lesion's cache (never under
    torchrun, whose scores are not one process's bits).

    Under torchrun (:func:`lesion.runtime.distributed.init`, or ``torchrun -m lesion search``) every rank
    runs this call: masked rows and Stage 1's noise samples are split across the ranks, every
    decision the time budget takes reads rank 0's clock, and rank 0 alone keeps the journal."""
    check_loaded(lm)
    plan = check_plan(plan)
    names, texts = text_names(texts, names)
    signals = check_signals(signals)
    if plan.strategy == "prefix" and "noise" not in signals:
        signals.append("noise")
    check_pool(per_signal)
    if journal is not None:
        check_journal(journal, resume)
    began = time.monotonic()
    deadline = None if plan.time_budget is None else began + plan.time_budget
    studies = [Study.create(lm, text, components) for text in texts]
    index = studies[0].index
    noise_options = {"alpha": 5.0, "samples": 100, "seed": 42, **check_noise(noise_options)}
    stage1_options = {**noise_options, "use_cache": use_cache and distributed.current().size == 1}
    score = SetScorer.for_model(lm.model, index, [s.input_ids for s in studies], ablation=plan.ablation,
                                objective=plan.objective, max_rows=plan.max_rows, dtype=lm.dtype,
                                deadline=deadline)
    bare_row_seconds = distributed.current().decide([_bare_row_seconds(lm, studies[0].input_ids)])[0]
    signals, left_out = affordable_signals(signals, bare_row_seconds * len(texts), noise_options, plan)
    memo = {} if memo is None else memo
    signal_seconds: dict[str, float] = {}
    scores = _signal_scores(lm, studies, index, signals, stage1_options, progress, memo, signal_seconds,
                            score.seconds_left)
    for name in signals:
        if name not in scores:
            left_out[name] = "the time budget ran out while the signals before it ran"
    signals = [s for s in signals if s in scores]
    pool, brought = candidate_pool({name: [top_neurons(index, v, per_signal) for v in per_text]
                                    for name, per_text in scores.items()})
    late = score.seconds_left() <= 0
    start = time.perf_counter()
    # past the deadline the first-order estimate (a backward pass per text) and the portfolio's parts
    # are skipped: the search can only stop, and should at once
    estimate = None if late else _estimate(lm, studies, index, pool, memo)
    signal_seconds["estimate"] = round(time.perf_counter() - start, 3)
    parts = [] if late else [PortfolioPart(name, tuple(p), _estimate(lm, studies, index, p, memo))
                             for name, p in portfolio_pools(index, scores, per_signal)]

    def prefix_order() -> list[Neuron]:
        ranking = studies[0].rank("noise", keep=1000, progress=progress, **stage1_options)
        return list(ranking.neurons)

    info = [{"name": name, "sha256": text_hash(s.text), "tokens": int(s.input_ids.shape[1])}
            for name, s in zip(names, studies)]
    settings = studies[0].settings(signals=list(signals), per_signal=per_signal, noise=noise_options,
                                   bare_row_seconds=round(bare_row_seconds, 4))
    if left_out:
        settings = settings.merged(signals_left_out=left_out)
    if len(texts) > 1:  # each text is in the result's `texts`, with its hash and token count
        settings = settings.merged(text=None, text_sha256=None, tokens=None, texts=list(texts))
    pool_info = {**brought, "per_signal": per_signal, "signal_seconds": signal_seconds}
    bar = SearchProgress(progress).attach(score)
    try:
        if journal is not None:
            pool_info["resumed_sets"] = _open_journal(score, lm, studies, plan, journal, resume)
        heel = find_smallest_heel(score, pool, plan, prefix_order, lm.name, settings, pool_info, info, say, estimate,
                                  parts)
    finally:
        bar.close()
        if score.journal is not None:
            score.journal.close()
    heel = replace(heel, seconds=round(time.monotonic() - began, 3))  # the signals included
    if score.journal is not None and score.journal.failure:  # a full disk: the search went on without it
        heel = replace(heel, screen=heel.screen.merged(journal_failure=score.journal.failure))
    if heel.stopped == Stopped.INTERRUPTED:
        return heel  # an interrupt asks for the result now: no more forwards
    try:
        return replace(heel, profile=tuple(describe(lm.model, index, studies[0].input_ids, heel)))
    except KeyboardInterrupt:  # during the profile's one forward: the set is found, keep it
        return replace(heel, stopped=Stopped.INTERRUPTED)


def check_plan(plan: SearchPlan) -> SearchPlan:
    """``plan`` checked, with its numbers as the CLI's flags give them (``epsilon=1`` is recorded as 1.0)."""
    if not isinstance(plan, SearchPlan):
        raise ParameterError("plan", f"must be a SearchPlan, e.g. SearchPlan(max_rows=50) (got "
                                     f"{type(plan).__name__})")
    plan.check()
    return replace(plan, epsilon=float(plan.epsilon),
                   time_budget=None if plan.time_budget is None else float(plan.time_budget))


def check_noise(noise_options: Mapping | None) -> dict:
    """The noise signal's options (alpha, samples, seed and Stage 1's others), alpha as a float."""
    if noise_options is None:
        return {}
    if not isinstance(noise_options, Mapping):
        raise ParameterError("noise_options", f"must be a dict of Stage 1 options, e.g. {{'samples': 20}} (got "
                                              f"{type(noise_options).__name__})")
    options = dict(noise_options)
    if isinstance(options.get("alpha"), int) and not isinstance(options["alpha"], bool):
        options["alpha"] = float(options["alpha"])
    return options


def text_names(texts: Sequence[str] | Mapping[str, str], names: Sequence[str] = ()) -> tuple[list[str], list[str]]:
    """(names, texts) of a list of texts (with ``names``: none, or one per text, each once) or of a
    ``{name: text}`` mapping. Without names the texts are text1, text2, ..."""
    if isinstance(texts, str):
        raise ParameterError("texts", "is one string: pass a list of texts, e.g. [text]")
    if isinstance(texts, Mapping):
        if names:
            raise ParameterError("names", "cannot be given with a `texts` mapping, whose keys name the texts")
        names, texts = list(texts), list(texts.values())
    else:
        names, texts = list(names), list(texts)
    if not texts:
        raise ParameterError("texts", "holds no text: pass at least one")
    odd = [t for t in texts if not isinstance(t, str)]
    if odd:
        raise ParameterError("texts", f"holds a {type(odd[0]).__name__}, not a string: pass the texts themselves")
    twice = first_repeat(texts)
    if twice is not None:
        raise ParameterError("texts", f"gives one text twice (text {texts.index(texts[twice]) + 1} and text "
                                      f"{twice + 1}): each text counts once in the objective; drop the repeat")
    if isinstance(names, str):
        raise ParameterError("names", "is one string: pass a list of names, one per text")
    if names and len(names) != len(texts):
        raise ParameterError("names", f"gives {len(names)} name(s) for {len(texts)} text(s): give one per text, "
                                      "or none (text1, text2, ...)")
    odd = [n for n in names if not isinstance(n, str) or not n.strip()]
    if odd:
        raise ParameterError("names", f"holds {odd[0]!r}: each name must be a non-empty string")
    twice = first_repeat(names)
    if twice is not None:
        raise ParameterError("names", f"gives {names[twice]!r} to two texts: the result and the transfer table "
                                      "are keyed by name, so one text's row would replace the other's")
    return names or [f"text{i + 1}" for i in range(len(texts))], texts


def _bare_row_seconds(lm, input_ids: torch.Tensor) -> float:
    """One unmasked row of the first text, timed warm (the scorer's baselines ran the first
    forward, which also pays for allocations)."""
    start = time.perf_counter()
    baseline_nll(lm.model, input_ids, lm.dtype)
    return time.perf_counter() - start


def affordable_signals(signals: Sequence[str], bare_seconds: float, noise_options: dict,
                       plan: SearchPlan) -> tuple[list[str], dict]:
    """The signals, less the noise signal when its estimated cost does not fit a quarter of the
    time budget (on a 1.5B model, 100 noise samples take minutes); prefix needs it whatever it costs."""
    signals = list(signals)
    if "noise" not in signals or plan.time_budget is None or plan.strategy == "prefix" or len(signals) == 1:
        return signals, {}
    cost = noise_options["samples"] * bare_seconds * NOISE_FORWARDS
    if cost <= NOISE_SHARE * plan.time_budget:
        return signals, {}
    signals.remove("noise")
    return signals, {"noise": f"estimated {cost:.0f} s ({noise_options['samples']} samples) > "
                              f"{NOISE_SHARE:.0%} of `time_budget` {plan.time_budget:g} s"}


def _signal_scores(lm, studies, index, signals, noise_options, progress, memo, seconds: dict,
                   seconds_left: Callable[[], float]) -> dict[str, list]:
    """Each signal's scores of every neuron, per text (superweight, data-free, once); ``seconds`` gets
    each signal's wall time. The portfolio's parts take their pools from the same scores. Once
    ``seconds_left`` (the scorer's, by rank 0's clock) is spent no further signal starts: the first
    always runs, a pool needs one."""
    scores: dict[str, list] = {}
    for name in signals:
        if scores and seconds_left() <= 0:
            break
        start = time.perf_counter()
        for study in studies:
            cached = (lambda signal, s=study: s.scores(signal, progress=progress, **noise_options)[0].values)
            scores.setdefault(name, []).append(_scores(lm, study, index, name, cached, memo))
            if SCORERS[name].data_free:
                break  # the same on every text
        seconds[name] = round(time.perf_counter() - start, 3)
    for key in [k for k in memo if k[0] == "acts"]:
        del memo[key]  # every signal that reads them has run
    return scores


def _scores(lm, study, index, name: str, cached, memo: dict) -> torch.Tensor:
    """One signal's scores on one text, kept in ``memo``: the screen's first-order estimate reuses
    attribution's, and a second search on the same model (``--transfer``) all of them."""
    key = ("scores", name, text_hash(study.text))
    acts_key = ("acts", text_hash(study.text))

    def acts() -> dict:  # one clean forward for activation and massive
        if acts_key not in memo:
            memo[acts_key] = clean_activations(lm.model, study.input_ids, index)
        return memo[acts_key]
    if key not in memo:
        memo[key] = signal_scores(name, lm.model, study.input_ids, index, cached, acts)
    return memo[key]


def _estimate(lm, studies, index, pool: Sequence[Neuron], memo: dict) -> dict[Neuron, float]:
    """First-order estimate of each pool neuron's effect, |sum_t a dL/da| (attribution patching: one
    forward and one backward per text), averaged over the texts."""
    per_text = [_scores(lm, s, index, "attribution", None, memo) for s in studies]
    flat = torch.tensor([index.flat(n) for n in pool], dtype=torch.long)
    mean = torch.stack([scores[flat] for scores in per_text]).mean(dim=0)
    return dict(zip(pool, mean.tolist()))


def _open_journal(score: SetScorer, lm, studies, plan: SearchPlan, path, resume: bool) -> int:
    """Under torchrun rank 0 alone reads and writes the journal; the sets it read reach every rank,
    so that every rank skips the same sets."""
    world = distributed.current()
    journal = SetJournal(path, {"model": lm.fingerprint(), "texts": [text_hash(s.text) for s in studies],
                                "ablation": plan.ablation}) if world.is_main else None
    known = journal.read() if resume and journal is not None else {}
    resumed = score.load(world.share_object(known)) if resume else 0
    if journal is not None:
        journal.start(resume)
        score.journal = journal
    return resumed


def describe(model: torch.nn.Module, index: SiteIndex, input_ids: torch.Tensor, heel: Heel) -> list[NeuronProfile]:
    """Where each heel neuron sits and where (on the first text) its |activation| peaks."""
    if not heel.neurons:
        return []
    sites = SiteIndex([index.by_name[m] for m in dict.fromkeys(n.module for n in heel.neurons)])
    acts = clean_activations(model, input_ids, sites)
    alone = heel.screen.heel_alone or {}
    rows = []
    for n in heel.neurons:
        a = acts[n.module][:, n.channel].abs()
        site = index.by_name[n.module]
        rows.append(NeuronProfile(str(n), site.layer, site.kind, alone.get(str(n)), int(a.argmax()), float(a.max()),
                                  float(acts[n.module].abs().median())))
    return rows


def check_pool(per_signal: int) -> None:
    """How many candidates each signal adds to the pool: at least one."""
    if isinstance(per_signal, bool) or not isinstance(per_signal, int) or per_signal < 1:
        raise ParameterError("per_signal", f"must be a whole number >= 1 (got {per_signal!r})")


def check_transfer(texts: Sequence[str]) -> None:
    """A transfer table compares heels across texts: it needs two at least."""
    if len(texts) < 2:
        raise ParameterError("texts", f"must hold at least two texts to transfer between (got {len(texts)}): "
                                      "give more `text`, `text_file` or `passages`")


def search_with_transfer(lm, texts: Sequence[str] | Mapping[str, str], names: Sequence[str] = (),
                         plan: SearchPlan | None = None, **options) -> Heel:
    """The joint heel over all texts, plus each text's own heel, and the Delta of every heel on
    every text (does a heel found on one input collapse the model on the others?). ``texts`` as
    :func:`search_heel` takes them, at least two."""
    check_loaded(lm)
    names, texts = text_names(texts, names)
    check_transfer(texts)
    plan = check_plan(SearchPlan() if plan is None else plan)
    memo: dict = {}
    joint = search_heel(lm, texts, plan, memo=memo, names=names, **options)
    alone = {k: v for k, v in options.items() if k not in ("journal", "resume")}  # the journal is the joint search's
    own = {name: search_heel(lm, [text], plan, memo=memo, names=[name], **alone)
           for name, text in zip(names, texts)}
    studies = [Study.create(lm, text, options.get("components")) for text in texts]
    scorers = [SetScorer.for_model(lm.model, studies[0].index, [s.input_ids], ablation=plan.ablation,
                                   max_rows=10 ** 9, dtype=lm.dtype) for s in studies]
    heels = {"joint": joint.neurons, **{f"own:{n}": h.neurons for n, h in own.items()}}
    table = transfer_table(scorers, heels)
    transfer = Transfer(tuple(names), {k: TransferRow(tuple(map(str, heels[k])), tuple(v)) for k, v in table.items()},
                        {n: len(h.neurons) for n, h in own.items()}, {n: h.rows for n, h in own.items()},
                        sum(s.rows for s in scorers))
    return replace(joint, transfer=transfer)
