"""One call for what ``lesion harden`` does: load the model, harden it, prove the function is kept
(float32 and bfloat16), measure the heel before and after, and write the folder."""
from __future__ import annotations

import dataclasses
import gc
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import LesionError, ParameterError
from ..runtime.options import HARDEN_METHODS, HARDEN_QK_ANGLES, MAX_SAMPLES, check_seed, check_whole_number
from ..results.harden import Budget

if TYPE_CHECKING:
    from ..results.harden import HardenRecord, Proof

MAX_ROWS = 1_000_000  # masked rows of one report search: beyond this a typo, not a study (days on a CPU)


REPORT_BUDGET = {"max_rows": 2000, "max_neurons": 1000, "samples": 100}  # the report's defaults


def check_budget(max_rows: int | None = None, max_neurons: int | None = None, samples: int | None = None,
                 report: bool = True) -> Budget:
    """The report's budget (None: its default), refused at once when it could not finish (the caps
    ``scan`` has), or when given without ``report``, which alone spends it."""
    given = {"max_rows": max_rows, "max_neurons": max_neurons, "samples": samples}
    if not report:
        name = next((n for n, v in given.items() if v is not None), None)
        if name is not None:
            raise ParameterError(name, "is the `report`'s budget, and no report was asked for: give `report` too, "
                                       "or drop it")
    max_rows, max_neurons, samples = (REPORT_BUDGET[n] if v is None else v for n, v in given.items())
    for name, value, cap in (("max_rows", max_rows, MAX_ROWS), ("max_neurons", max_neurons, None),
                             ("samples", samples, MAX_SAMPLES)):
        check_whole_number(name, value, 1, cap, ": the paper uses 100" if name == "samples" else "")
    return Budget(max_neurons=max_neurons, max_rows=max_rows, samples=samples, seed=42)


def harden_model(model: str, out: str | Path, *, method: str = "hadamard", seed: int = 0,
                 heads: bool = False, qk_angles: str | None = None, text: str | None = None,
                 neurons: Sequence | None = None, report: bool = False,
                 max_rows: int | None = None, max_neurons: int | None = None, samples: int | None = None,
                 device: str = "cpu",
                 progress: bool = True, say: Callable[[str], object] | None = None) -> HardenRecord:
    """Harden ``model`` (an alias, folder, .gguf or hub id) and write it to the folder ``out``;
    returns the :class:`~lesion.results.HardenRecord` written there as lesion-harden.json.

    The residual stream is rotated (``method`` "hadamard" or "rotate", ``seed``; ``heads``: inside
    each head too, the query/key planes by ``qk_angles``: "fitted" (default) on lesion's calibration
    texts, "random" or "none"), in float32. A family whose stream no rotation keeps (Gemma 3) takes
    ``heads`` alone: only its heads are rotated. The record holds the proof that the function is kept (the original
    and the hardened model traced on fixed texts, in float32 and in bfloat16) and the heel before
    and after on ``text`` (default: the Bookends sentence): the residual outliers and the Delta of
    ``neurons`` masked alone (default: the down_proj output writing the most massive channel).
    ``report=True`` adds the paper's two stages and ``lesion search`` on both models with the same
    budget (``max_rows``, ``max_neurons``, ``samples``; default 2000, 1000, 100; refused without ``report``).

    Every input and ``out`` are checked before the model loads; ``out`` must be new, empty, or a
    folder an earlier hardening wrote (replaced only if it holds nothing else; a symbolic link is
    written through). Ctrl-C anywhere raises KeyboardInterrupt and writes nothing. ``say`` gets a
    line as each step starts (the CLI prints it).

    >>> record = lesion.harden_model("smollm2-135m", "smollm2-hardened")
    >>> hardened = lesion.load_model("smollm2-hardened")
    """
    from ..model.neurons import Neuron
    from ..texts.text import read_text
    from .folder import check_out_folder

    say = say or (lambda line: None)
    if method not in HARDEN_METHODS:
        raise ParameterError("method", f"must be one of {', '.join(HARDEN_METHODS)} (got {method!r})")
    check_seed(seed)
    qk_angles = check_qk_angles(qk_angles, heads)
    budget = check_budget(max_rows, max_neurons, samples, report)
    text = read_text(text)
    neurons = [n if isinstance(n, Neuron) else Neuron.parse(n) for n in neurons] if neurons else None
    check_out_folder(out)  # before any load: a path that cannot be written costs nothing
    _check_family_before_loading(model, heads)
    return _harden_and_prove(model, out, method, seed, heads, qk_angles, text, neurons, budget if report else None,
                             device, progress, say)


def check_qk_angles(qk_angles: str | None, heads: bool) -> str:
    """How the query/key planes turn (None: "fitted"); refused when given without ``heads``."""
    if qk_angles is None:
        return "fitted"
    if not heads:
        raise ParameterError("qk_angles", "turns the query/key planes inside the heads, and no head rotation was "
                                          "asked for: give `heads` too, or drop it")
    if qk_angles not in HARDEN_QK_ANGLES:
        raise ParameterError("qk_angles", f"must be one of {', '.join(HARDEN_QK_ANGLES)} (got {qk_angles!r})")
    return qk_angles


def _check_family_before_loading(spec: str, heads: bool) -> None:
    """A family hardening refuses (a mixture of experts, Gemma 3...) is refused from its config, before
    minutes of loading; a config the plan's reader cannot take is left to the check after the load."""
    import types

    from ..plan.config import read_config
    from .transform import check_family
    try:
        _, config = read_config(spec)
    except LesionError:
        return
    check_family(types.SimpleNamespace(config=config), heads)


def _harden_and_prove(spec: str, out, method: str, seed: int, heads: bool, qk_angles: str, text: str, neurons,
                      budget, device: str, progress: bool, say) -> HardenRecord:
    from ..model.loading import load_model
    from ..model.neurons import Neuron
    from ..results.harden import HeelComparison
    from ..texts.text import text_hash
    from .loaded import harden_loaded
    from .folder import check_out_folder, save_folder
    from .measure import heel_profile
    from .proof import compare, proof_texts, trace
    from .report import markdown

    texts = proof_texts()
    low_reference, float32_bytes = _bfloat16_reference(spec, device, heads, texts, text, neurons, progress, say)
    check_out_folder(out, needs_bytes=float32_bytes)  # the weights' size is known now, before the real work
    lm = load_model(spec, dtype="float32", device=device, progress=progress)
    say("measuring the original (float32)")
    reference = trace(lm.model, lm.tokenizer, texts)
    before = heel_profile(lm, text, neurons, budget, progress)
    neurons = neurons or [Neuron.parse(before.masked[0].neuron)]
    hardened, record = harden_loaded(lm, method, seed, heads, inplace=True, watch=before.outliers.channel,
                                     name=str(out), qk_angles=qk_angles)
    say(f"hardened ({method}, seed {seed}); measuring it (float32)")
    proof = {"float32": compare(reference, trace(hardened.model, hardened.tokenizer, texts))}
    after = heel_profile(hardened, text, neurons, budget, progress, original=before)
    say("bfloat16: the hardened model")
    proof["bfloat16"] = _bfloat16_proof(hardened.model, hardened.tokenizer, texts, low_reference)
    gc.collect()
    heel = HeelComparison(text_sha256=text_hash(text), before=before, after=after, budget=budget)
    rotation = dataclasses.replace(record.rotation, text_sha256=text_hash(text))
    record = record.with_(proof=proof, heel=heel, rotation=rotation)
    save_folder(hardened.model, hardened.tokenizer, record, markdown(record), out, progress)
    return record


def _bfloat16_reference(spec: str, device: str, heads: bool, texts, text, neurons, progress: bool, say):
    """The original loaded in bfloat16, traced, and let go before the float32 model loads: the
    two at once, with the load's float32 staging, made the peak of a 1.5B run 20.9 GB. The
    family, the text and the neurons are checked on it, before any other work. Also returns
    the size of the float32 weights the folder will hold (at least)."""
    from ..model.loading import load_model
    from ..model.neurons import discover_sites
    from ..texts.text import encode
    from .transform import check_family
    from .proof import trace
    say("measuring the original (bfloat16)")
    original = load_model(spec, dtype="bfloat16", device=device, progress=progress)
    check_family(original.model, heads)
    encode(original.tokenizer, text, original.device)  # a text too short for the method: refused now
    if neurons:
        discover_sites(original.model, "all").check(neurons)
    float32_bytes = 4 * sum(p.numel() for p in original.model.parameters())
    reference = trace(original.model, original.tokenizer, texts)
    del original
    gc.collect()
    return reference, float32_bytes


def _bfloat16_proof(model, tokenizer, texts, reference) -> Proof:
    """The hardened model in bfloat16 against the original loaded in bfloat16: rounding differs
    in the new basis, so this is measured, not expected to be bit-equal."""
    import torch

    from .proof import cast_copy, compare, trace
    low = cast_copy(model, torch.bfloat16)
    hardened = trace(low, tokenizer, texts)
    del low
    return compare(reference, hardened)
