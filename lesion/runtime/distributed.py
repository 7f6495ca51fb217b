"""Data-parallel Stage 1 and masked rows over torch.distributed, launched with torchrun.

    torchrun --nproc-per-node 2 -m lesion scan --out run

Every rank (process) loads the model and runs the same program; only two kinds of work
are split, and both split with no approximation:

- Stage 1's noise samples. Each rank takes a contiguous share of every segment of the
  seeded stream (a segment is the whole of K, or the samples between two adaptive-K checks)
  and keeps running sums over its share; the sums are added across ranks (all_reduce) at
  the end of each segment. Every rank draws the *whole* stream from the one seeded generator
  and skips the samples of the other ranks, so sample i is the same noise whichever rank
  runs it, and one process draws exactly the stream it always drew (drawing a sample costs
  microseconds, a forward milliseconds to seconds).
- Masked rows (Stage 2, the heel search, every ``masked_nll`` caller). Each rank evaluates a
  contiguous share of the rows, in the order that shares the most prefix, and the per-row
  NLLs are combined with an all_reduce of a vector that is zero outside each rank's rows
  (adding zeros is exact, so a row's NLL is the one its rank computed).

With one process every function here is the identity and nothing is imported from
torch.distributed: single-process results are byte-identical to those of lesion without it.
With several, scores differ from one process in their last bits (the sums are added in
another order and rows are batched differently): see ``docs/distributed.md`` for the
tolerance the tests hold.

A rank that fails tells the others at their next collective: every collective starts with
an all_reduce of a failure flag, and a failing rank joins that flag with 1 and its message
(one line) before it stops. Rank 0 prints that one message; no rank writes a result. A rank
that dies without a word (killed, segfault) breaks the other ranks' collectives (gloo/nccl
report the lost peer, at the latest after the process group's timeout, LESION_DIST_TIMEOUT_S,
default 2 h): rank 0 then says that it lost contact. Only rank 0 writes results, and only
after every rank agreed that the work succeeded (:func:`agree`).
"""
from __future__ import annotations

import os
import sys
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, Iterator, Sequence

from ..errors import LesionError, ParameterError

if TYPE_CHECKING:
    import torch

# The commands that run under torchrun: their ranks write nothing and rank 0 writes after agree().
COMMANDS = ("scan", "search")
DEFAULT_TIMEOUT_S = 7200  # a rank may wait this long for the others at a collective


@dataclass
class World:
    """This process's place among the ranks: rank, world size, and where collectives run."""
    rank: int = 0
    size: int = 1
    backend: str = ""
    device: str = "cpu"  # collectives move tensors here (cuda:<local rank> for nccl)
    shares: dict[str, list[int]] = field(default_factory=dict)  # work kind -> items per rank

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def share(self, start: int, stop: int) -> range:
        """This rank's contiguous share of items start..stop-1 (all of them in one process)."""
        n = stop - start
        return range(start + n * self.rank // self.size, start + n * (self.rank + 1) // self.size)

    def count(self, kind: str, n: int) -> None:
        """Record every rank's share of ``n`` items of ``kind`` (every rank can compute all shares)."""
        if self.size == 1:
            return
        shares = self.shares.setdefault(kind, [0] * self.size)
        for r in range(self.size):
            shares[r] += n * (r + 1) // self.size - n * r // self.size

    def noise_batches(self, generator: "torch.Generator", shape, start: int, stop: int,
                      batch_size: int) -> Iterator["torch.Tensor"]:
        """This rank's noise samples of stream positions start..stop-1, in batches of at most
        ``batch_size``: the stream is drawn in order by every rank, which keeps its share.
        One process gets the batches it always got: start, start + batch_size, ..."""
        import torch
        mine = self.share(start, stop)
        self.count("stage1_samples", stop - start)
        for _ in range(start, mine.start):
            torch.randn(shape, generator=generator)
        for first in range(mine.start, mine.stop, batch_size):
            b = min(batch_size, mine.stop - first)
            yield torch.stack([torch.randn(shape, generator=generator) for _ in range(b)])
        for _ in range(mine.stop, stop):
            torch.randn(shape, generator=generator)

    def rows(self, order: list[int]) -> list[int]:
        """This rank's contiguous share of the rows in ``order`` (all of them in one process)."""
        self.count("masked_rows", len(order))
        mine = self.share(0, len(order))
        return order[mine.start:mine.stop]

    def gather_rows(self, values: list[float], mine: Sequence[int]) -> list[float]:
        """Every row's value, each from the rank that computed it (``values`` holds this rank's
        rows at the indices ``mine``). Exact: the other ranks add zeros."""
        if self.size == 1:
            return values
        import torch
        vector = torch.zeros(len(values), dtype=torch.float64)
        for i in mine:
            vector[i] = values[i]
        return self.sum_tensors([vector])[0].tolist()

    def sum_tensors(self, tensors: Sequence["torch.Tensor"]) -> list["torch.Tensor"]:
        """Each tensor summed over the ranks (new tensors on the same devices; the same in one process)."""
        if self.size == 1:
            return list(tensors)
        import torch.distributed as dist
        self._check_peers()
        summed = []
        for t in tensors:
            moved = t.detach().to(self.device, copy=True)
            _collective(lambda moved=moved: dist.all_reduce(moved))
            summed.append(moved.to(t.device))
        return summed

    def decide(self, values: Sequence[float]) -> list[float]:
        """Rank 0's ``values`` on every rank (the same list in one process): what a decision that
        every rank must take alike reads, such as the time left or a timed cost (clocks differ
        between ranks, so each rank timing for itself would stop them at different steps)."""
        if self.size == 1:
            return list(values)
        import torch
        import torch.distributed as dist
        self._check_peers()
        vector = torch.tensor(list(values), dtype=torch.float64, device=self.device)
        _collective(lambda: dist.broadcast(vector, src=0))
        return vector.tolist()

    def share_object(self, value: object) -> object:
        """Rank 0's ``value`` (picklable) on every rank: what rank 0 alone read, such as a journal."""
        if self.size == 1:
            return value
        import torch.distributed as dist
        self._check_peers()
        holder = [value if self.is_main else None]
        _collective(lambda: dist.broadcast_object_list(holder, src=0, device=self.device))
        return holder[0]

    def sum_dict(self, tensors: dict[str, "torch.Tensor"] | None) -> dict[str, "torch.Tensor"] | None:
        if self.size == 1 or tensors is None:
            return tensors
        return dict(zip(tensors, self.sum_tensors(list(tensors.values()))))

    def _check_peers(self, message: str | None = None) -> None:
        """The failure flag every collective starts with: raise _Stop on every rank if any rank failed."""
        import torch
        import torch.distributed as dist
        flag = torch.tensor([0 if message is None else 1], device=self.device)
        _collective(lambda: dist.all_reduce(flag, op=dist.ReduceOp.MAX))
        if int(flag.item()) == 0:
            return
        messages: list = [None] * self.size
        _collective(lambda: dist.all_gather_object(messages, message))
        failed = [r for r, m in enumerate(messages) if m is not None]
        if len(failed) == self.size and len(set(messages)) == 1:
            raise _Stop(messages[0])  # every rank refused the same input: say it once, as one process would
        raise _Stop(f"rank {failed[0]} of {self.size} failed: {messages[failed[0]]}")


class _Stop(Exception):
    """Some rank failed; every rank knows its message and stops."""


class _Lost(Exception):
    """A collective broke: a rank died or timed out."""


def _collective(op: Callable[[], object]) -> None:
    try:
        op()
    except _Stop:
        raise
    except Exception as e:  # gloo and nccl raise RuntimeError (or DistBackendError) for a lost peer
        raise _Lost(str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__) from None


_ONE = World()
_world: World = _ONE   # the world collectives use now: _ONE outside torchrun and after agree()
_launched: World = _ONE  # the world the run was launched with, for the record


def current() -> World:
    return _world


def launched() -> bool:
    """True when started by torchrun (or another launcher that sets WORLD_SIZE) with several ranks."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def speaks() -> bool:
    """Whether this process prints errors: rank 0 under torchrun, always in one process."""
    return not launched() or os.environ.get("RANK", "0") == "0"


def record() -> dict:
    """What run.json records about the ranks: nothing for one process."""
    if _launched.size == 1:
        return {}
    return {"world_size": _launched.size, "backend": _launched.backend, "shares": _launched.shares}


def agree() -> bool:
    """Every rank finished its work: True on rank 0, which writes the results from now on as
    one process (no more collectives), False on the others, which write nothing. Raises on
    every rank if any failed. One process: True."""
    global _world
    if _world.size == 1:
        return True
    _world._check_peers()
    main = _world.is_main
    _world = _ONE
    return main


def start(args) -> World:
    """Join the process group torchrun describes (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR/PORT):
    nccl when the model runs on CUDA, else gloo; each rank on its own GPU."""
    import datetime

    import torch
    import torch.distributed as dist
    global _world, _launched
    rank, size = int(os.environ.get("RANK", "0")), int(os.environ["WORLD_SIZE"])
    local = int(os.environ.get("LOCAL_RANK", rank))
    cuda = torch.cuda.is_available() and (str(args.device).startswith("cuda") or args.device_map is not None)
    device = "cpu"
    if cuda:
        torch.cuda.set_device(local)  # --device-map auto then starts on this rank's GPU
        device = f"cuda:{local}"
        if args.device == "cuda":
            args.device = device
    elif str(args.device).startswith("cuda"):
        raise ParameterError("device", f"{args.device} asked for but CUDA is not available on this machine: use cpu")
    timeout = datetime.timedelta(seconds=float(os.environ.get("LESION_DIST_TIMEOUT_S", DEFAULT_TIMEOUT_S)))
    backend = "nccl" if cuda else "gloo"
    dist.init_process_group(backend, rank=rank, world_size=size, timeout=timeout)
    _world = _launched = World(rank=rank, size=size, backend=backend, device=device)
    return _world


def init(device: str = "cpu", device_map=None) -> World:
    """For library code launched by torchrun: join the process group as ``lesion scan`` does and
    return this rank's World (one process: the World of one). Until :func:`stop`, Stage 1
    (``rank_by_noise``) and every ``masked_nll`` caller (Stage 2, the heel scorer) split their
    work across the ranks; every rank must make the same calls. A heel search's time budget is
    rank 0's clock, shared with :meth:`World.decide`, so every rank stops at the same step.
    Load the model on ``world.device`` when it is a GPU."""
    if not launched():
        return current()
    from types import SimpleNamespace
    return start(SimpleNamespace(device=device, device_map=device_map))


def stop() -> None:
    global _world
    import torch.distributed as dist
    if dist.is_initialized():
        dist.destroy_process_group()
    _world = _ONE


def run_command(run: Callable, args, describe: Callable[[LesionError], str] = str) -> int:
    """Run a CLI command: directly in one process, on every rank under torchrun. Under torchrun
    a failure anywhere is one message from rank 0 and exit code 2 on every rank; ``describe``
    words a user error (the CLI's shows a parameter as its flag)."""
    if not launched():
        return run(args)
    if args.command not in COMMANDS:
        raise LesionError(f"`lesion {args.command}` does not run under torchrun (only {', '.join(COMMANDS)}): "
                          "run it as one process")
    args.no_cache = True  # the Stage 1 score cache holds single-process bits: never mix them in
    world = start(args)
    if not world.is_main:
        args.quiet = True  # one progress display: rank 0's
    try:
        try:
            return run(args)
        except (_Stop, _Lost):
            raise
        except Exception as error:  # tell the others, who are waiting at (or will reach) a collective
            if current().size == 1:
                raise  # after agree(): rank 0 alone, writing; the others have finished
            world._check_peers(_one_line(error, describe))
            raise  # not reached: _check_peers raised _Stop
    except _Stop as stopped:
        return _stopped(world, str(stopped))
    except _Lost as lost:
        return _stopped(world, f"lost contact with another rank ({lost}): a rank died or timed out; "
                               "see the launcher's log for which", barrier=False)
    finally:
        stop()


def _one_line(error: Exception, describe: Callable[[LesionError], str] = str) -> str:
    text = (describe(error) if isinstance(error, LesionError) else str(error)).strip().splitlines()
    message = text[0] if text else ""
    return message if isinstance(error, LesionError) else f"{type(error).__name__}: {message}"


def _stopped(world: World, message: str, barrier: bool = True) -> int:
    """Rank 0 prints the one message, then every rank exits 2 (after a barrier, so that the
    launcher does not stop rank 0 before it printed)."""
    if world.is_main:
        print(f"lesion: error: {message}", file=sys.stderr, flush=True)
    if barrier:
        import torch.distributed as dist
        try:
            dist.barrier()
        except Exception:
            pass
    return 2


@contextmanager
def as_world(world: World) -> Iterator[World]:
    """Use ``world`` for collectives inside the block (tests, and library callers that manage
    their own process group)."""
    global _world
    before, _world = _world, world
    try:
        yield world
    finally:
        _world = before
