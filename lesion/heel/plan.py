"""What a heel search may do and spend: :class:`SearchPlan`, and the portfolio of restricted sub-searches."""
from __future__ import annotations

from dataclasses import dataclass, field

from ..runtime.anytime import Stopped, check_time_budget
from ..errors import ParameterError
from ..masking.metrics import check_epsilon
from ..model.neurons import Neuron
from ..runtime.options import ABLATIONS, OBJECTIVES, PRUNERS, STRATEGIES, check_whole_number


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


STOPS = {Stopped.BUDGET: "the budget (`max_rows` / `time_budget`)",
         Stopped.INTERRUPTED: "an interrupt (Ctrl-C / SIGTERM)"}


@dataclass(frozen=True)
class PortfolioPart:
    """A restricted sub-search of the portfolio: the neurons of some sites only (a component group),
    with its own pool and first-order estimate. Every part runs on the one scorer: a set any part
    evaluated costs nothing again, and all share one row and time budget."""
    name: str
    pool: tuple[Neuron, ...]
    estimate: dict[Neuron, float] | None = field(default=None, compare=False)


PART_SHARE = 2 / 3  # of the rows left, what the next part may take (the rest: later parts and the certificate)
