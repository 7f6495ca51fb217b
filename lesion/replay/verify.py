"""Tamper check: fingerprints of the weights that produce and consume each critical neuron.

``scan`` writes them beside ``critical.json``; ``verify`` recomputes them on a deployed copy
and says, per weight slice, whether it is intact, zeroed, scaled or otherwise altered.
Compare like with like: load both in the same ``--dtype`` (recorded in the file).
"""
from __future__ import annotations

import math
from pathlib import Path

import torch

from ..errors import InconsistentRun, LesionError, ParameterError, ResultError
from ..runtime.files import read_json
from ..model.fingerprints import fingerprints
from ..model.loading import LoadedModel
from ..model.neurons import Neuron, SiteIndex, discover_sites
from ..method.provenance import check_same_revision, model_provenance
from ..results import CriticalSet, Settings
from ..results.verify import SliceCheck, VerifyReport

def _classify(ref: dict, new: dict | None) -> tuple[str, str]:
    if new is None:
        return "missing", "slice not found (shape or module changed)"
    if new["sha256"] == ref["sha256"]:
        return "intact", ""
    if new["l2"] == 0.0 and ref["l2"] > 0:
        return "zeroed", "all values are 0"
    if ref["l2"] > 0 and new["numel"] == ref["numel"]:
        pairs = [(a, b) for a, b in zip(ref["head"], new["head"]) if abs(a) > 1e-12]
        if pairs:
            scale = pairs[0][1] / pairs[0][0]
            consistent = all(math.isclose(b, scale * a, rel_tol=1e-4, abs_tol=1e-7) for a, b in pairs) and \
                math.isclose(new["l2"], abs(scale) * ref["l2"], rel_tol=1e-4)
            if consistent and not math.isclose(scale, 1.0, rel_tol=1e-6):
                return "scaled", f"x{scale:.6g}"
    return "altered", f"L2 {ref['l2']:.6g} -> {new['l2']:.6g}, max |w| {ref['max_abs']:.6g} -> {new['max_abs']:.6g}"


def verify(model: torch.nn.Module, index: SiteIndex, reference: dict) -> list[SliceCheck]:
    checks = []
    for neuron, ref_slices in reference["neurons"].items():
        n = Neuron.parse(neuron)
        try:
            index.site(n)
            current = {f["slice"]: f for f in fingerprints(model, index, [n])["neurons"][str(n)]}
        except LesionError:
            current = {}
        for ref in ref_slices:
            status, detail = _classify(ref, current.get(ref["slice"]))
            checks.append(SliceCheck(neuron, ref["slice"], status, detail))
    return checks


def read_fingerprints(critical: CriticalSet, path: Path, against: str | Path) -> dict:
    """The fingerprints written with ``critical``; refused if they would check nothing or other neurons."""
    if not path.is_file():
        raise ResultError(f"no fingerprints at {path}: `lesion scan` writes them beside critical.json; re-run it "
                          "on the original model or pass `fingerprints`")
    reference = read_json(path)
    neurons = reference.get("neurons")
    if not isinstance(neurons, dict) or not isinstance(reference.get("dtype"), str) or not all(
            isinstance(v, list) and v and all(isinstance(s, dict) and {"slice", "sha256"} <= set(s) for s in v)
            for v in neurons.values()):
        raise ResultError(f"{path} is not a lesion fingerprints file: re-create it with lesion scan")
    if not neurons:
        raise ResultError(f"{path} fingerprints no neuron, so verify would check nothing: re-create it with "
                          "lesion scan on the original model")
    expected = {str(n) for n in critical.neurons}
    if set(neurons) != expected:
        raise InconsistentRun(f"{path} fingerprints other neurons than the critical set in {against} "
                          f"({len(set(neurons) ^ expected)} differ): pass the fingerprints written with it")
    return reference


def fingerprint_dtype(reference: dict, dtype: str | None = None) -> str:
    """The dtype to load the model in to check ``reference``: the one its fingerprints were taken in
    (another dtype rounds every weight differently, and every slice would read as changed)."""
    if dtype is not None and dtype != reference["dtype"]:
        raise ParameterError("dtype", f"must be {reference['dtype']}, the dtype the fingerprints were taken in "
                                      f"(got {dtype})")
    return reference["dtype"]


def verify_model(lm: LoadedModel, critical: CriticalSet, reference: dict) -> VerifyReport:
    """``lesion verify`` as a library call: the slices ``reference`` fingerprinted, checked on ``lm``;
    refused when ``critical`` was made at another commit of a hub id than ``lm`` was loaded at, or
    ``lm`` is in another dtype than the fingerprints."""
    check_same_revision(critical.settings, lm, "critical set")
    fingerprint_dtype(reference, lm.dtype)
    checks = verify(lm.model, discover_sites(lm.model, "all"), reference)
    same = critical.settings.model_fingerprint == lm.fingerprint()
    return VerifyReport(lm.name, tuple(checks), same, Settings.of(model_provenance(lm)))
