"""The names the search and ablation options take, in a module without torch, so that the CLI
can offer them as argparse choices without importing the libraries that use them (the rankers
and signals are in :mod:`lesion.method.scorers`, torch-free too), and the checks every count and list
option shares."""
from collections.abc import Hashable, Iterable

from ..errors import ParameterError

DEFAULT_MODEL = "smollm2-135m"
DEFAULT_DTYPE = "float32"
DTYPES = ("float32", "bfloat16", "float16")  # the names of the torch dtypes a model loads in
MAX_SAMPLES = 100_000  # Stage 1 noise samples: the paper uses 100; beyond this a typo, not a study
MAX_SEED = 2**63 - 1  # torch's generators take a 64-bit seed

ABLATIONS = {"zero": "0 at every position (the paper)",
             "mean": "the neuron's mean over the text at every position",
             "position0": "0 at the first token only"}
STRATEGIES = ("greedy", "topk", "prefix")
PRUNERS = ("elimination", "best-drop", "none")
OBJECTIVES = ("worst", "mean")
STAGE2 = {"linear": "every n in order: the paper's first crossing, exactly",
          "gallop": "n = 1, 2, 4, ... to bracket the first crossing, then every n inside the bracket"}
HARDEN_METHODS = ("rotate", "hadamard")  # lesion harden --method: a random orthogonal or a randomized Hadamard Q
HARDEN_QK_ANGLES = ("fitted", "random", "none")  # lesion harden --heads: how the query/key planes turn


def check_whole_number(name: str, value, least: int, most: int | None = None, hint: str = "") -> int:
    """``value`` as parameter ``name`` takes it: a whole number (not a bool) >= ``least`` and, when
    ``most`` is given, <= ``most``; ``hint`` ends the message (how to pick one)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < least or (most is not None and value > most):
        raise ParameterError(name, f"must be a whole number >= {least}{f' and <= {most:,}' if most is not None else ''}"
                                   f" (got {value!r}){hint}")
    return value


def first_repeat(items: Iterable[Hashable]) -> int | None:
    """The index of the first item equal to one before it; None when all differ."""
    seen: set = set()
    for i, item in enumerate(items):
        if item in seen:
            return i
        seen.add(item)
    return None


def check_seed(seed: int) -> int:
    """A seed torch's generators take: a whole number 0..MAX_SEED."""
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED:
        raise ParameterError("seed", f"must be a whole number 0..{MAX_SEED} (got {seed!r})")
    return seed
