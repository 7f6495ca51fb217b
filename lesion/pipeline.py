"""The two-stage method end to end, as library calls a notebook can make.

    lm = load_model("smollm2-135m")
    study = Study.create(lm, text=BOOKENDS)
    ranking = study.rank(alpha=5, samples=100, seed=42)
    critical = study.identify(ranking, epsilon=1)
"""
from __future__ import annotations

import dataclasses
import platform
import time
from dataclasses import dataclass, field

import torch

from . import __version__
from .errors import LesionError
from .loading import LoadedModel
from .neurons import SiteIndex, discover_sites
from .cache import cached, scores_key
from .rankers import RANKERS, Scores, ranking_from_scores
from .results import CriticalSet, Ranking
from .search import find_critical_set
from .texts import BOOKENDS, encode, text_hash


def versions() -> dict:
    import transformers
    return {"lesion": __version__, "torch": torch.__version__, "transformers": transformers.__version__,
            "python": platform.python_version()}


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
        ids = encode(lm.tokenizer, text, lm.device)
        index = discover_sites(lm.model, components)
        return cls(lm, text, ids, index, components or "default")

    def settings(self, **extra) -> dict:
        base = {"model": self.lm.name, "model_fingerprint": self.lm.fingerprint(), "dtype": self.lm.dtype,
                "components": self.components, "text_sha256": text_hash(self.text),
                "text": self.text if len(self.text) <= 2000 else None,
                "tokens": int(self.input_ids.shape[1]), "versions": versions()}
        return {**base, **extra}

    def scores(self, ranker: str = "noise", *, alpha: float = 5.0, samples: int | str = 100, seed: int = 42,
               alpha_relative: bool = False, reduce: str = "max", batch_size: int = 16, max_samples: int = 100,
               progress: bool = True, use_cache: bool = True) -> tuple[Scores, dict]:
        """Stage 1 scores of every neuron and their settings, cached on disk by everything that
        determines them (not the batch size). ``samples="auto"`` adds the K used and the
        confidence of the settled top to the settings."""
        if ranker not in RANKERS:
            raise LesionError(f"unknown ranker {ranker!r}: use one of {', '.join(RANKERS)}")
        adaptive = dict(max_samples=max_samples) if samples == "auto" else {}
        options = {"noise": dict(alpha=alpha, samples=samples, alpha_relative=alpha_relative, reduce=reduce,
                                 **adaptive),
                   "activation": dict(reduce=reduce), "gradient": dict(reduce=reduce)}.get(ranker, {})
        speed = {"noise": dict(batch_size=batch_size)}.get(ranker, {})
        settings = self.settings(ranker=ranker, seed=seed, **options)
        key = scores_key(**{k: v for k, v in settings.items() if k not in ("versions", "text")})
        start = time.perf_counter()
        scores, hit = cached(key, lambda: RANKERS[ranker](self.lm.model, self.input_ids, self.index, seed=seed,
                                                          progress=progress, **options, **speed),
                             enabled=use_cache)
        self.timings["rank_cached_s" if hit else "rank_s"] = time.perf_counter() - start
        return scores, {**settings, **(scores.adaptive or {})}

    def rank(self, ranker: str = "noise", *, keep: int = 5000, **options) -> Ranking:
        """Stage 1: the top ``keep`` neurons of ``ranker`` (options as :meth:`scores`)."""
        scores, settings = self.scores(ranker, **options)
        return ranking_from_scores(self.index, scores, ranker, keep, self.lm.name, {**settings, "keep": keep})

    def identify(self, ranking: Ranking, *, epsilon: float = 1.0, step: int = 1, max_neurons: int = 1000,
                 stage2: str = "linear", progress: bool = True) -> CriticalSet:
        """Stage 2. With an adaptive-K ranking, ``critical_within_settled`` in the settings says
        whether the answer used only the settled top of the ranking (else re-rank at full K)."""
        self.check_ranking(ranking)
        settings = {**ranking.settings, **self.settings(), "epsilon": epsilon, "step": step,
                    "max_neurons": max_neurons, "ranker": ranking.ranker, "stage2": stage2}
        start = time.perf_counter()
        critical = find_critical_set(self.lm.model, self.input_ids, self.index, ranking.neurons,
                                     epsilon=epsilon, step=step, max_neurons=max_neurons, stage2=stage2,
                                     model_name=self.lm.name, settings=settings, progress=progress)
        self.timings["identify_s"] = time.perf_counter() - start
        if "settled_top" in ranking.settings:
            used = len(critical.neurons) if critical.reached else critical.trajectory[-1].n
            within = used <= ranking.settings["settled_top"]
            critical = dataclasses.replace(critical, settings={**critical.settings,
                                                               "critical_within_settled": within})
        return critical

    def check_ranking(self, ranking: Ranking) -> None:
        check_same_model(ranking.settings, self.lm, "ranking")


def check_same_model(settings: dict, lm: LoadedModel, what: str) -> None:
    """Refuse a result file made on other weights (its settings carry their fingerprint)."""
    theirs = settings.get("model_fingerprint")
    if theirs is not None and theirs != lm.fingerprint():
        raise LesionError(f"the {what} was made on another model ({settings.get('model')!r}, "
                          f"fingerprint {theirs}): re-run it with this --model")
