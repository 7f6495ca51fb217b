"""Long work that can stop at any step and still hand back what it finished.

A command whose cost grows with the set or the model runs its steps inside :class:`Anytime`:
each finished step calls :meth:`Anytime.step`, which advances a progress bar and stops the
work once the time budget is spent. Ctrl-C (and SIGTERM, in the main thread) stop it the same
way. Either way the ``with`` block is left quietly and :attr:`Anytime.stopped` says why
(``complete``, ``budget`` or ``interrupted``), so the caller returns and writes the steps that
finished instead of losing them.
"""
from __future__ import annotations

import contextlib
import enum
import math
import signal
import time

from tqdm.auto import tqdm

from ..errors import ParameterError

class Stopped(str, enum.Enum):
    """Why work stopped, as every result records it (the strings its file holds): long work run
    under :class:`Anytime` ends complete, by its budget or interrupted; a search (the heel search)
    ends reached or not reached, by its budget or interrupted."""
    COMPLETE = "complete"
    REACHED = "reached"  # a search: a set reached epsilon
    NOT_REACHED = "not reached"  # a search ran to its end and no set reached epsilon
    BUDGET = "budget"  # the time budget (or a search's max_rows) was spent
    INTERRUPTED = "interrupted"  # Ctrl-C or SIGTERM

    def __str__(self) -> str:  # the word, in messages and f-strings, on every Python
        return self.value

    def __format__(self, spec: str) -> str:
        return format(self.value, spec)


WORK_STOPS = frozenset({Stopped.COMPLETE, Stopped.BUDGET, Stopped.INTERRUPTED})  # how Anytime work ends
SEARCH_STOPS = frozenset({Stopped.REACHED, Stopped.NOT_REACHED, Stopped.BUDGET, Stopped.INTERRUPTED})  # a search


class _BudgetSpent(Exception):
    """Raised by :meth:`Anytime.step` to leave the work early; caught by :class:`Anytime`."""


def check_time_budget(seconds: float | None, name: str = "time_budget") -> None:
    if seconds is not None and not (isinstance(seconds, (int, float)) and math.isfinite(seconds) and seconds > 0):
        raise ParameterError(name, f"must be a finite number of seconds > 0 (got {seconds!r})")


class Anytime:
    """``with Anytime(total, desc, time_budget=..., progress=...) as run: ... run.step()``.

    ``max_steps`` is a second budget, in the caller's unit (rows, sets): spent once that many
    steps have finished."""

    def __init__(self, total: int, desc: str, *, time_budget: float | None = None, progress: bool = False,
                 unit: str = "step", max_steps: int | None = None):
        check_time_budget(time_budget)
        if max_steps is not None and (isinstance(max_steps, bool) or not isinstance(max_steps, int) or max_steps < 1):
            raise ParameterError("max_rows", f"must be a whole number >= 1, got {max_steps!r}")
        self.budget = time_budget
        self.max_steps = max_steps
        self.stopped: Stopped = Stopped.COMPLETE
        self.steps = 0
        self._bar = tqdm(total=total, desc=desc, unit=unit, disable=not progress, leave=False)
        self._started = time.perf_counter()
        self._sigterm = sigterm_as_interrupt()

    @property
    def seconds(self) -> float:
        return time.perf_counter() - self._started

    def over_budget(self) -> bool:
        return (self.budget is not None and self.seconds >= self.budget) or \
            (self.max_steps is not None and self.steps >= self.max_steps)

    def step(self, n: int = 1) -> None:
        """One more step finished; stops the work here if the budget is spent."""
        self.steps += n
        self._bar.update(n)
        if self.over_budget():
            raise _BudgetSpent

    def check_something_finished(self) -> None:
        """Called after the ``with`` block: an interrupt before any step finished leaves nothing
        to hand back, so it goes on up as KeyboardInterrupt (the CLI then writes nothing, exit
        130) instead of becoming an empty result."""
        if self.stopped == Stopped.INTERRUPTED and self.steps == 0:
            raise KeyboardInterrupt

    def __enter__(self) -> "Anytime":
        self._sigterm.__enter__()
        return self

    def __exit__(self, kind, error, traceback) -> bool:
        self._bar.close()
        self._sigterm.__exit__(None, None, None)
        if kind is _BudgetSpent:
            self.stopped = Stopped.BUDGET
            return True
        if kind is KeyboardInterrupt:
            self.stopped = Stopped.INTERRUPTED
            return True
        return False


# Set by lesion's own SIGINT/SIGTERM handler. Python runs a signal handler between any two
# bytecodes, also inside a finalizer (``__del__``), where the KeyboardInterrupt it raises is
# printed and dropped; long loops call raise_if_interrupted() once per batch, so that a
# Ctrl-C swallowed that way still stops the work at the next batch.
_interrupted = False


def _interrupt(signum, frame):
    global _interrupted
    _interrupted = True
    raise KeyboardInterrupt


def forget_interrupt() -> None:
    """A loop starting afresh: an interrupt before it was already dealt with."""
    global _interrupted
    _interrupted = False


def raise_if_interrupted() -> None:
    if _interrupted:
        raise KeyboardInterrupt


@contextlib.contextmanager
def _handling(signum: int):
    if signal.getsignal(signum) is signal.SIG_IGN:  # started ignoring it (nohup, a background job): keep so
        yield
        return
    try:
        previous = signal.signal(signum, _interrupt)
    except ValueError:  # not the main thread: signals are left alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signum, previous)
        forget_interrupt()


def remembered_interrupts():
    """Ctrl-C inside the block raises KeyboardInterrupt as usual and is also remembered, for
    raise_if_interrupted() (the CLI runs every command inside)."""
    return _handling(signal.SIGINT)


def sigterm_as_interrupt():
    """SIGTERM (a job scheduler's stop, `kill`) takes the Ctrl-C path while inside: the work stops
    as on KeyboardInterrupt and what finished is kept. Outside the main thread signals are left alone."""
    return _handling(signal.SIGTERM)
