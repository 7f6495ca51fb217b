"""The results the golden byte test compares: a scan (fixed K and auto) and searches (one text, two
texts with a transfer table, one that does not reach epsilon) of a tiny random Llama, seeds fixed.

``python tests/golden_results.py`` (from the repository root, PYTHONPATH=.) writes them to
tests/data/golden with machine.json, the CPU kind that wrote them; the files there were written by the
code before results were typed, and tests/test_results_golden.py checks that today's code computes the
same results (the same bytes on that CPU kind, floats within float32 rounding on any other)."""
from __future__ import annotations

import json
import platform
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from conftest import TEXT, char_tokenizer, make_tiny  # noqa: E402

GOLDEN = Path(__file__).parent / "data" / "golden"
SECOND = "A quiet morning by the river, with boats drifting past the old stone bridge."


def machine() -> dict:
    """What decides the last bits of a float32 result on the CPU: the processor's name and the vector
    instruction sets torch's kernels pick from, and the torch version."""
    import torch
    name, flags = platform.processor(), set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                name = value.strip()
            elif key.strip() == "flags":
                flags = set(value.split())
    except OSError:  # not Linux: the name alone
        pass
    return {"cpu": name, "vector": sorted(flags & {"avx2", "avx512f", "avx512_bf16", "amx_tile", "fma"}),
            "torch": torch.__version__}


def tiny_lm():
    from lesion.model.loading import LoadedModel
    return LoadedModel(make_tiny("llama"), char_tokenizer(), "tiny-llama", "float32")


def produce(out: Path) -> list[Path]:
    """Write every golden result into ``out``; the paths written."""
    from lesion.heel import SearchPlan, search_heel
    from lesion.heel.search import search_with_transfer
    from lesion.method.study import Study
    lm = tiny_lm()
    quiet = dict(progress=False, use_cache=False)
    scan = Study.create(lm, TEXT).scan(samples=4, epsilon=0.001, **quiet)
    scan.save(out / "scan")
    auto = Study.create(lm, TEXT).scan(samples="auto", max_samples=8, epsilon=0.001, **quiet)
    auto.save(out / "scan-auto")
    search = dict(noise_options={"samples": 4}, per_signal=8, **quiet)
    search_heel(lm, [TEXT], SearchPlan(epsilon=0.004, max_rows=400), **search).save(out / "heel.json")
    search_with_transfer(lm, [TEXT, SECOND], ["fox", "river"], SearchPlan(epsilon=0.003, max_rows=300),
                         **search).save(out / "heel-two.json")
    search_heel(lm, [TEXT], SearchPlan(epsilon=50.0, max_size=2, max_rows=100), signals=["activation", "attribution"],
                **search).save(out / "heel-unreached.json")
    return sorted(p for p in out.rglob("*.json") if p.name not in ("run.json", "fingerprints.json"))


if __name__ == "__main__":
    for path in produce(GOLDEN):
        print(path)
    (GOLDEN / "machine.json").write_text(json.dumps(machine(), indent=2) + "\n", encoding="utf-8")
    for path in [*GOLDEN.rglob("run.json"), *GOLDEN.rglob("fingerprints.json")]:
        path.unlink()  # not compared: run.json holds the date, fingerprints.json is verify's
