"""Where a scan's memory and time go, phase by phase, in one process: load, fingerprint,
Study.create, Stage 1, Stage 2.

    flock /tmp/lesion-heavy.lock python benchmarks/scale_phases.py /work/scale/llama-3b-bf16 --dtype float32

Per phase: its wall seconds, the peak VmRSS (exact: VmHWM after resetting it through
/proc/self/clear_refs), the peak RssAnon and RssFile seen by a 10 ms sampler thread (file-backed
pages are a safetensors shard's mmap; anonymous ones are tensors), and the same at the phase's
end. One JSON line per phase; ``--json FILE`` writes them all. (Adapted from the issue's probe,
which imported lesion 0.1's flat modules.)"""
from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time

# The checkout this script lives in, before any installed lesion.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

KEYS = ("VmRSS", "VmHWM", "RssAnon", "RssFile")


def status() -> dict[str, float]:
    """This process's memory figures from /proc/self/status, in GiB."""
    out = {}
    with open("/proc/self/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in KEYS:
                out[key] = int(value.split()[0]) / 2 ** 20
    return out


class Sampler(threading.Thread):
    """The peak RssAnon and RssFile since the last reset, sampled every 10 ms."""

    def __init__(self):
        super().__init__(daemon=True)
        self.peak: dict[str, float] = {}

    def reset(self) -> None:
        self.peak = {}
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # resets VmHWM to the current VmRSS

    def run(self) -> None:
        while True:
            now = status()
            for key in ("RssAnon", "RssFile"):
                self.peak[key] = max(self.peak.get(key, 0.0), now[key])
            time.sleep(0.01)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("model")
    p.add_argument("--dtype", default="float32")
    p.add_argument("--samples", type=int, default=8)
    p.add_argument("--max-neurons", type=int, default=5)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--stop-after", choices=("load", "create", "rank", ""), default="")
    p.add_argument("--json", default="")
    a = p.parse_args()
    sampler = Sampler()
    sampler.start()
    rows = []

    def phase(name, fn):
        sampler.reset()
        start = time.perf_counter()
        out = fn()
        seconds = time.perf_counter() - start
        peak, now = dict(sampler.peak), status()
        row = {"phase": name, "s": round(seconds, 2), "peak_rss": round(now["VmHWM"], 2),
               "peak_anon": round(peak.get("RssAnon", 0), 2), "peak_file": round(peak.get("RssFile", 0), 2),
               "end_rss": round(now["VmRSS"], 2), "end_anon": round(now["RssAnon"], 2),
               "end_file": round(now["RssFile"], 2)}
        rows.append(row)
        print(json.dumps(row), flush=True)
        return out

    import torch
    print(json.dumps({"torch_threads": torch.get_num_threads(), "MALLOC_ARENA_MAX": os.environ.get("MALLOC_ARENA_MAX"),
                      "load": os.getloadavg()}), flush=True)
    phase("import", lambda: __import__("lesion.method.study"))
    from lesion.method.study import Study
    from lesion.model.loading import load_model
    from lesion.texts.text import BOOKENDS
    lm = phase("load_model", lambda: load_model(a.model, dtype=a.dtype, progress=False))
    print(json.dumps({"dtype": str(next(lm.model.parameters()).dtype),
                      "parameters": sum(p.numel() for p in lm.model.parameters())}), flush=True)
    if a.stop_after != "load":
        phase("fingerprint", lm.fingerprint)
        study = phase("Study.create", lambda: Study.create(lm, BOOKENDS, None))
        print(json.dumps({"tokens": study.input_ids.shape[1], "neurons": study.index.total}), flush=True)
        if a.stop_after != "create":
            ranking = phase("rank", lambda: study.rank(samples=a.samples, batch_size=a.batch_size, use_cache=False,
                                                       progress=False))
            if a.stop_after != "rank":
                critical = phase("identify", lambda: study.identify(ranking, max_neurons=a.max_neurons,
                                                                    progress=False))
                print(json.dumps({"rows": critical.forward_rows, "timings": study.timings}), flush=True)
    print(json.dumps({"load_after": os.getloadavg()}), flush=True)
    if a.json:
        with open(a.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    sys.exit(main())
