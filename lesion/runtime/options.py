"""The names the search and ablation options take, in a module without torch, so that the CLI
can offer them as argparse choices without importing the libraries that use them (the rankers
and signals are in :mod:`lesion.method.scorers`, torch-free too), and the checks every count and list
option shares."""
from collections.abc import Hashable, Iterable
from pathlib import Path

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


GIB = 2 ** 30


def available_memory(device: object = None) -> int | None:
    """Bytes that can still be allocated where ``device`` computes: a CUDA device's free memory,
    else the host's (MemAvailable, within the cgroup's limit where one is set; psutil where there
    is no /proc). None when this machine does not say."""
    if device is not None and str(device).startswith("cuda"):
        import torch
        if torch.cuda.is_available():
            return int(torch.cuda.mem_get_info(torch.device(str(device)))[0])
        return None
    found = []
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                found.append(int(line.split()[1]) * 1024)
    except (OSError, ValueError, IndexError):
        pass
    try:  # a container's limit (cgroup v2) can be far below the host's free memory
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        if limit != "max":
            found.append(int(limit) - int(Path("/sys/fs/cgroup/memory.current").read_text()))
    except (OSError, ValueError):
        pass
    if not found:
        try:
            import psutil
            found.append(int(psutil.virtual_memory().available))
        except ImportError:
            return None
    return max(0, min(found))


def check_fits(parameter: str, value: int, bytes_each: int, *, fixed: int = 0, what: str = "",
               least: int = 1, device: object = None, hint: str = "") -> None:
    """Refuse ``value`` of parameter ``parameter`` when ``fixed + value * bytes_each`` bytes
    (``what`` says what they hold) cannot fit the memory :func:`available_memory` finds, before
    anything is allocated; the message gives the largest value that fits (``hint`` what else helps
    when not even ``least`` does)."""
    available = available_memory(device)
    need = fixed + value * bytes_each
    if available is None or need <= available:
        return
    largest = (available - fixed) // bytes_each if bytes_each > 0 else 0
    where = f"free on {device}" if device is not None and str(device).startswith("cuda") else "available"
    if largest >= least:
        advice = f"use at most {largest:,}"
    else:
        advice = f"not even {least:,} fits{': ' + hint if hint else ''}"
    raise ParameterError(parameter, f"{value:,} needs about {need / GIB:.3g} GiB{' for ' + what if what else ''}, "
                                    f"but {available / GIB:.3g} GiB is {where}: {advice}")
