"""The two-stage method end to end, as library calls a notebook can make.

    lm = load_model("smollm2-135m")
    study = Study.create(lm, text=BOOKENDS)
    ranking = study.rank(alpha=5, samples=100, seed=42)
    critical = study.identify(ranking, epsilon=1)
    scan = study.scan(samples="auto", epsilon=1)  # both, the adaptive top covering n*
    scan.save("lesion-run")                       # the run folder, written as a unit
    ranking, critical = scan                      # a ScanResult unpacks as the two stages
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field, replace

import torch

from ..errors import ModelMismatch, ParameterError
from ..model.loading import LoadedModel
from .provenance import check_same_revision, model_provenance
from ..model.neurons import SiteIndex, discover_sites
from .cache import cached_tensors, scores_key
from .scorers import SCORERS, check_ranker
from .rankers import Scores, check_keep, check_rank_options, ranking_from_scores
from ..results import CriticalSet, Ranking, ScanResult, Settings
from .stage2 import find_critical_set
from ..texts.text import BOOKENDS, check_context, encode, text_hash
from ..model.fingerprints import fingerprints as weight_fingerprints


@dataclass
class Study:
    """One model, one text, its neuron sites: what both stages work on."""
    lm: LoadedModel
    text: str
    input_ids: torch.Tensor
    index: SiteIndex
    components: str
    timings: dict = field(default_factory=dict)

    @classmethod
    def create(cls, lm: LoadedModel, text: str = BOOKENDS, components: str | None = None) -> "Study":
        check_loaded(lm)
        ids = encode(lm.tokenizer, text, lm.device)
        check_context(lm.model, ids)
        index = discover_sites(lm.model, components)
        return cls(lm, text, ids, index, components or "default")

    @classmethod
    def recreate(cls, lm: LoadedModel, settings: Settings, source, text: str | None = None) -> "Study":
        """The Study a result was made on, from its recorded settings, on ``lm``; refused when ``lm``
        holds other weights, ``text`` is another text, or the tokenizer splits the text differently."""
        from ..results import recorded_text
        check_same_model(settings, lm, f"result {str(source)!r}")
        study = cls.create(lm, recorded_text(settings, text, source), settings.components)
        tokens = settings.tokens
        if tokens is not None and tokens != study.input_ids.shape[1]:
            raise ModelMismatch(f"{str(source)!r} was made on {tokens} tokens but this model's tokenizer gives "
                              f"{study.input_ids.shape[1]}: use the tokenizer of the original `model`")
        return study

    def settings(self, **extra) -> Settings:
        """What a result made on this study records: the model, the text, and ``extra``."""
        # The whole text is kept: lesion.replay.runfolder writes a long one to a file beside the result.
        return Settings.of({**model_provenance(self.lm), "components": self.components,
                            "text_sha256": text_hash(self.text), "text": self.text,
                            "tokens": int(self.input_ids.shape[1])}, **extra)

    def scores(self, ranker: str = "noise", *, alpha: float = 5.0, samples: int | str = 100, seed: int = 42,
               alpha_relative: bool = False, reduce: str = "max", batch_size: int = 16,
               max_samples: int | None = None, settle_top: int | None = None, progress: bool = True,
               use_cache: bool = True) -> tuple[Scores, Settings]:
        """Stage 1 scores of every neuron and their settings, cached on disk by everything that
        determines them (the batch size included: it changes the last bits of the sums).
        ``samples="auto"`` adds the K used and the confidence of the settled top to the settings;
        ``settle_top`` says how much of the top must settle (default: the head of the ranking);
        ``max_samples`` caps it (default 100)."""
        spec = SCORERS[check_ranker(ranker)]
        max_samples = check_rank_options(samples=samples, alpha=alpha, seed=seed, batch_size=batch_size,
                                         max_samples=max_samples, settle_top=settle_top)
        # A number is recorded as its option's type, so that alpha=5 and --alpha 5 (5.0) give one
        # settings record, one cache key and the same bytes.
        alpha = float(alpha)
        given = dict(alpha=alpha, samples=samples, alpha_relative=alpha_relative, reduce=reduce,
                     batch_size=batch_size)
        options = {name: given[name] for name in spec.options}
        if "samples" in options and samples == "auto":
            options["max_samples"] = max_samples
            if settle_top is not None:
                options["settle_top"] = settle_top
        settings = self.settings(ranker=ranker, seed=seed, **options)
        key = scores_key(**settings.without("versions", "text").to_dict())
        start = time.perf_counter()

        def compute() -> dict[str, torch.Tensor]:
            return _scores_to_tensors(spec.fn(self.lm.model, self.input_ids, self.index, seed=seed,
                                              progress=progress, **options))

        tokens = self.input_ids.shape[1]
        tensors, hit = cached_tensors(key, compute, lambda t: _valid_scores(t, self.index.total, tokens),
                                      enabled=use_cache)
        self._time("rank_cached_s" if hit else "rank_s", start)
        adaptive = json.loads(bytes(tensors["adaptive"].tolist())) if "adaptive" in tensors else None
        return Scores(tensors["values"], tensors.get("positions"), adaptive), settings.merged(adaptive)

    def rank(self, ranker: str = "noise", *, keep: int = 5000, **options) -> Ranking:
        """Stage 1: the top ``keep`` neurons of ``ranker`` (options as :meth:`scores`)."""
        check_keep(keep)
        scores, settings = self.scores(ranker, **options)
        return ranking_from_scores(self.index, scores, ranker, keep, self.lm.name, settings.merged(keep=keep))

    def identify(self, ranking: Ranking, *, epsilon: float = 1.0, step: int = 1, max_neurons: int = 1000,
                 stage2: str = "linear", progress: bool = True) -> CriticalSet:
        """Stage 2. With an adaptive-K ranking, ``critical_within_settled`` in the settings says
        whether the answer used only the settled top of the ranking (else re-rank at full K)."""
        from .stage2 import check_options
        check_options(epsilon, step, max_neurons, stage2)
        epsilon = float(epsilon)  # recorded as --epsilon records it
        self.check_ranking(ranking)
        tried = min(max_neurons, len(ranking.neurons))
        if step > tried:
            raise ParameterError("step", f"{step} is larger than the {tried} candidate(s) to try: lower it")
        settings = ranking.settings.merged(self.settings(), epsilon=epsilon, step=step, max_neurons=max_neurons,
                                           ranker=ranking.ranker, stage2=stage2)
        start = time.perf_counter()
        critical = find_critical_set(self.lm.model, self.input_ids, self.index, ranking.neurons,
                                     epsilon=epsilon, step=step, max_neurons=max_neurons, stage2=stage2,
                                     model_name=self.lm.name, settings=settings, progress=progress)
        self._time("identify_s", start)
        if ranking.settings.settled_top is not None:
            within = _read_by_stage2(critical) <= ranking.settings.settled_top
            critical = replace(critical, settings=critical.settings.merged(critical_within_settled=within))
        return critical

    def scan(self, ranker: str = "noise", *, keep: int = 5000, epsilon: float = 1.0, step: int = 1,
             max_neurons: int = 1000, stage2: str = "linear", progress: bool = True,
             **rank_options) -> ScanResult:
        """Both stages, as a :class:`~lesion.results.ScanResult` (which unpacks as ``ranking,
        critical`` and saves itself as a run folder, fingerprints included).

        With ``samples="auto"``, the top that must settle covers the critical set:
        when Stage 2 reached epsilon at an n* past the settled top and sampling stopped before its
        cap, Stage 1 samples again until the top n* is settled (or the cap), and Stage 2 runs on
        that ranking. Another pass follows only when Stage 2 read past the top that just settled
        (at least the last pass's n*), so the top that must settle grows from pass to pass and
        this ends, at the latest at the cap. A search that never reached epsilon read its whole
        candidate list and is not repeated: its settings and the printed note say what settled."""
        ranking = self.rank(ranker, keep=keep, progress=progress, **rank_options)
        while True:
            critical = self.identify(ranking, epsilon=epsilon, step=step, max_neurons=max_neurons,
                                     stage2=stage2, progress=progress)
            settings = critical.settings
            if (settings.critical_within_settled is not False or settings.stopped != "settled"
                    or not critical.reached):
                return ScanResult(ranking, critical, self.fingerprints(critical), dict(self.timings),
                                  time.strftime("%Y-%m-%dT%H:%M:%S%z"))
            ranking = self.rank(ranker, keep=keep, progress=progress,
                                **{**rank_options, "settle_top": _read_by_stage2(critical)})

    def fingerprints(self, critical: CriticalSet) -> dict | None:
        """What ``lesion verify`` checks: the weights that produce and consume each critical neuron."""
        if not critical.neurons:
            return None
        return weight_fingerprints(self.lm.model, discover_sites(self.lm.model, "all"), critical.neurons, self.lm.dtype)

    def _time(self, step: str, start: float) -> None:
        # Summed: a scan whose adaptive Stage 1 had to sample again ranks and identifies twice.
        self.timings[step] = self.timings.get(step, 0.0) + time.perf_counter() - start

    def check_ranking(self, ranking: Ranking) -> None:
        """A ranking Stage 2 can read on this study: made on its model, its text and its components."""
        if not isinstance(ranking, Ranking):
            raise ParameterError("ranking", f"must be a Ranking (study.rank(...) or Ranking.load(path)), not "
                                            f"{type(ranking).__name__}")
        check_same_model(ranking.settings, self.lm, "ranking")
        theirs = ranking.settings.text_sha256
        if theirs != text_hash(self.text):
            made_on = f"another text (SHA-256 {str(theirs)[:16]}...)" if theirs else "a text it does not record"
            raise ParameterError("ranking", f"was made on {made_on}, not this study's: create the Study on the "
                                            "ranking's text (ranking.settings.text), or rank this one")
        if ranking.settings.components not in (None, self.components):
            raise ParameterError("ranking", f"was made on components {ranking.settings.components!r}, this study "
                                            f"has {self.components!r}: create the Study with the ranking's")


def check_loaded(lm) -> None:
    """What a study runs on: a model lesion loaded, not its name."""
    if not isinstance(lm, LoadedModel):
        hint = f" (got {type(lm).__name__} {lm!r})" if isinstance(lm, (str, bytes)) else f" (got {type(lm).__name__})"
        raise ParameterError("lm", f"must be a loaded model, lesion.load_model(spec){hint}: load it first")


def _read_by_stage2(critical: CriticalSet) -> int:
    """How far down the ranking Stage 2's answer depends on its order: n*, or the last n tried."""
    return len(critical.neurons) if critical.reached else critical.trajectory[-1].n


def _scores_to_tensors(scores: Scores) -> dict[str, torch.Tensor]:
    tensors = {"values": scores.values.float().cpu()}
    if scores.positions is not None:
        tensors["positions"] = scores.positions.long().cpu()
    if scores.adaptive:  # JSON bytes: the cache holds tensors only, and json.loads runs no code
        tensors["adaptive"] = torch.tensor(list(json.dumps(scores.adaptive).encode()), dtype=torch.uint8)
    return tensors


def _valid_scores(tensors: dict[str, torch.Tensor], total: int, tokens: int) -> bool:
    """A cache entry is used only if it is exactly what a ranker returns for this index and
    text: one finite float32 score per neuron, each position inside the text."""
    values, positions, adaptive = tensors.get("values"), tensors.get("positions"), tensors.get("adaptive")
    if adaptive is not None:
        try:
            if adaptive.dtype != torch.uint8 or not isinstance(json.loads(bytes(adaptive.tolist())), dict):
                return False
        except ValueError:
            return False
    shaped = (set(tensors) <= {"values", "positions", "adaptive"} and values is not None
              and values.dtype == torch.float32 and values.shape == (total,)
              and (positions is None or (positions.dtype == torch.long and positions.shape == (total,))))
    return (shaped and bool(torch.isfinite(values).all())
            and (positions is None or bool(((positions >= 0) & (positions < tokens)).all())))


def check_same_model(settings: Settings, lm: LoadedModel, what: str) -> None:
    """Refuse a result file made on other weights (its settings carry their fingerprint), or at
    another hub commit."""
    check_same_revision(settings, lm, what)  # first: at another commit, the fingerprint differs for that reason
    theirs = settings.model_fingerprint
    if theirs is None:
        raise ModelMismatch(f"the {what} records no model_fingerprint, so the model it was made on cannot be "
                            "checked: re-create it with lesion on this model")
    if theirs != lm.fingerprint():
        raise ModelMismatch(f"the {what} was made on another model or dtype ({settings.model!r}, "
                            f"{settings.dtype}, fingerprint {theirs}): pass that `model` and `dtype`, "
                          "or re-run it on this one")
