"""Stage 1 and masked rows split over torchrun ranks (gloo, CPU) give one process's answer.

The ranks add Stage 1's sums in another order and batch the masked rows differently, so
scores may differ in their last bits: SCORE_RTOL is the stated tolerance. Neurons, their
order and the critical set must be identical.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from lesion.cli import main
from lesion.runtime.distributed import World

TEXT = "the quick brown fox jumps over the lazy dog"
SCAN = ["scan", "--text", TEXT, "--samples", "12", "--batch-size", "4", "--epsilon", "0.001", "--quiet",
        "--no-cache"]
SCORE_RTOL = 1e-5  # relative, per neuron: float32 sums of 12 samples in another order


def torchrun(ranks: int, *args, script: str | None = None, env: dict | None = None) -> subprocess.CompletedProcess:
    target = [script] if script else ["-m", "lesion"]
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(ranks),
               "--standalone", *target, *args]
    env = {**os.environ, "LESION_NO_PROGRESS": "1", "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.run(command, capture_output=True, text=True, timeout=240, env=env)


@pytest.fixture(scope="module")
def one_process(tiny_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("one") / "run"
    assert main([*SCAN, "--model", tiny_dir, "--out", str(out)]) == 0
    return out


def read(folder: Path, name: str) -> dict:
    return json.loads((folder / name).read_text())


@pytest.mark.parametrize("ranks", [2, 3])
@pytest.mark.slow
def test_ranks_give_the_ranking_and_critical_set_of_one_process(ranks, one_process, tiny_dir, tmp_path):
    out = tmp_path / "run"
    done = torchrun(ranks, *SCAN, "--model", tiny_dir, "--out", str(out))
    assert done.returncode == 0, done.stderr[-2000:]
    ref, got = read(one_process, "ranking.json"), read(out, "ranking.json")
    assert got["neurons"] == ref["neurons"]  # same neurons, same order
    assert got["scores"] == pytest.approx(ref["scores"], rel=SCORE_RTOL, abs=0)
    assert got["positions"] == ref["positions"]
    ref_set, got_set = read(one_process, "critical.json"), read(out, "critical.json")
    assert len(ref_set["neurons"]) > 1 and got_set["neurons"] == ref_set["neurons"]
    assert got_set["forward_rows"] == ref_set["forward_rows"]
    assert got_set["delta"] == pytest.approx(ref_set["delta"], rel=1e-4)
    run = read(out, "run.json")
    assert run["world_size"] == ranks and run["backend"] == "gloo"
    assert sum(run["shares"]["stage1_samples"]) == 12
    assert max(run["shares"]["stage1_samples"]) - min(run["shares"]["stage1_samples"]) <= 1
    assert sum(run["shares"]["masked_rows"]) == ref_set["forward_rows"] - 1  # every row but the baseline
    assert "world_size" not in got["settings"]  # settings are those of one process
    assert "world_size" not in read(one_process, "run.json")  # one process records nothing about ranks


@pytest.mark.slow
def test_adaptive_samples_agree_across_ranks(tiny_dir, tmp_path):
    """--samples auto: the ranks sum their shares at every check, so they stop at the K one process stops at."""
    auto = [*SCAN, "--samples", "auto", "--max-samples", "30", "--model", tiny_dir]
    assert main([*auto, "--out", str(tmp_path / "one")]) == 0
    done = torchrun(2, *auto, "--out", str(tmp_path / "two"))
    assert done.returncode == 0, done.stderr[-2000:]
    ref, got = read(tmp_path / "one", "ranking.json"), read(tmp_path / "two", "ranking.json")
    for key in ("samples_used", "settled_top", "stopped", "settle_top"):
        assert got["settings"][key] == ref["settings"][key]
    assert got["neurons"] == ref["neurons"]
    assert got["scores"] == pytest.approx(ref["scores"], rel=SCORE_RTOL, abs=0)
    shares = read(tmp_path / "two", "run.json")["shares"]["stage1_samples"]
    assert sum(shares) == ref["settings"]["samples_used"]


SCORER = """
import json, sys
import torch
sys.path.insert(0, sys.argv[2])
from conftest import make_tiny
from lesion.runtime import distributed
from lesion.heel.scorer import SetScorer
from lesion.model.neurons import discover_sites
world = distributed.init()
model = make_tiny("llama")
index = discover_sites(model)
ids = torch.randint(3, 128, (1, 16), generator=torch.Generator().manual_seed(0))
score = SetScorer.for_model(model, index, [ids])
sets = [index.neurons(range(i, i + 1 + i % 3)) for i in range(0, 600, 15)]
values = score(sets)
if world.is_main:
    json.dump({"values": values, "rows": score.rows, "shares": world.shares}, open(sys.argv[1], "w"))
distributed.stop()
"""


@pytest.mark.slow
def test_heel_scorer_rows_split_across_ranks(tmp_path):
    """The heel search's objective: each rank scores its share of the sets, every rank gets all."""
    script = tmp_path / "scorer.py"
    script.write_text(SCORER)
    tests = str(Path(__file__).resolve().parent)
    done = torchrun(2, str(tmp_path / "two.json"), tests, script=str(script))
    assert done.returncode == 0, done.stderr[-2000:]
    subprocess.run([sys.executable, str(script), str(tmp_path / "one.json"), tests], check=True, timeout=240,
                   env={**os.environ, "WORLD_SIZE": "1"})
    one, two = (json.loads((tmp_path / f"{n}.json").read_text()) for n in ("one", "two"))
    assert two["rows"] == one["rows"] == 40
    assert two["values"] == pytest.approx(one["values"], rel=1e-5, abs=1e-6)
    assert two["shares"] == {"masked_rows": [20, 20]} and one["shares"] == {}


SEARCH = ["search", "--text", TEXT, "--epsilon", "0.005", "--samples", "12", "--screen", "60", "--max-rows", "20000",
          "--time-budget", "3600", "--quiet"]
SKEWED_CLOCK = """
import os, sys, time
from lesion.heel import scorer
if os.environ["RANK"] == "1":  # this rank's clock runs an hour ahead: alone, it would stop at once
    class Ahead:
        perf_counter = staticmethod(time.perf_counter)
        @staticmethod
        def monotonic():
            return time.monotonic() + 7200.0
    scorer.time = Ahead
from lesion.cli import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.slow
def test_search_under_torchrun_gives_one_process_heel_and_resumes(tiny_dir, tmp_path):
    """Two ranks (the second with a clock an hour ahead, so that a budget decided per rank would stop
    it at once and hang rank 0) stop by the row budget, resume, and end at one process's heel."""
    assert main([*SEARCH, "--model", tiny_dir, "--out", str(tmp_path / "one.json")]) == 0
    script = tmp_path / "skewed.py"
    script.write_text(SKEWED_CLOCK)
    two = [*SEARCH, "--model", tiny_dir, "--out", str(tmp_path / "two.json")]
    env = {"LESION_DIST_TIMEOUT_S": "120"}
    done = torchrun(2, *two, "--max-rows", "40", script=str(script), env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    assert read(tmp_path, "two.json")["stopped"] == "budget"
    done = torchrun(2, *two, "--resume", script=str(script), env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    ref, got = read(tmp_path, "one.json"), read(tmp_path, "two.json")
    assert ref["stopped"] == got["stopped"] == "reached" and len(ref["neurons"]) > 1
    assert got["neurons"] == ref["neurons"]
    assert got["delta"] == pytest.approx(ref["delta"], rel=1e-4)
    assert got["screen"]["resumed_sets"] > 0 and got["rows"] < ref["rows"]
    journal = [json.loads(line) for line in (tmp_path / "two.json.sets.jsonl").read_text().splitlines()]
    reference = [json.loads(line) for line in (tmp_path / "one.json.sets.jsonl").read_text().splitlines()]
    assert sorted(map(str, (j["set"] for j in journal[1:]))) == sorted(map(str, (j["set"] for j in reference[1:])))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["one.json", "one.json.sets.jsonl", "skewed.py",
                                                          "two.json", "two.json.sets.jsonl"]  # rank 1 wrote nothing


FAILING_RANK = """
import os, sys
from lesion.method import rankers as stage1
if os.environ["RANK"] == "1":
    def broken(fn, items):
        raise RuntimeError("simulated failure on this rank\\nsecond line")
    stage1.split_on_oom = broken
from lesion.cli import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.slow
def test_a_failing_rank_stops_every_rank_with_one_message_and_no_file(tiny_dir, tmp_path):
    script = tmp_path / "failing.py"
    script.write_text(FAILING_RANK)
    out = tmp_path / "run"
    done = torchrun(2, *SCAN, "--model", tiny_dir, "--out", str(out), script=str(script))
    assert done.returncode != 0
    errors = [line for line in done.stderr.splitlines() if line.startswith("lesion: error:")]
    assert errors == ["lesion: error: rank 1 of 2 failed: RuntimeError: simulated failure on this rank"]
    assert "lesion/" not in "".join(line for line in done.stderr.splitlines() if line.strip().startswith("File "))
    assert not out.exists() or not any(out.iterdir())


def test_only_rank_0_prints_errors(monkeypatch, tiny_dir, capsys):
    """Under torchrun every rank refuses the same bad input; one line is printed, by rank 0."""
    monkeypatch.setenv("WORLD_SIZE", "2")
    for rank, printed in (("1", ""), ("0", "lesion: error: argument --stage2")):
        monkeypatch.setenv("RANK", rank)
        assert main([*SCAN, "--model", tiny_dir, "--stage2", "nope"]) == 2
        assert capsys.readouterr().err.startswith(printed)


def test_other_commands_refuse_torchrun(monkeypatch, tiny_dir, tmp_path, capsys):
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert main(["rank", "--model", tiny_dir, "--text", TEXT, "--out", str(tmp_path / "r.json")]) == 2
    assert "does not run under torchrun" in capsys.readouterr().err


@pytest.mark.parametrize("size", [1, 2, 3, 5])
@pytest.mark.parametrize("start,stop,batch", [(0, 12, 4), (10, 20, 16), (0, 7, 3)])
def test_each_rank_draws_its_share_of_the_one_seeded_stream(size, start, stop, batch):
    shape = (3, 2)
    stream = torch.Generator().manual_seed(7)
    for _ in range(start):
        torch.randn(shape, generator=stream)
    expected = torch.stack([torch.randn(shape, generator=stream) for _ in range(start, stop)])
    parts, generators = [], []
    for rank in range(size):
        gen = torch.Generator().manual_seed(7)
        for _ in range(start):
            torch.randn(shape, generator=gen)
        batches = list(World(rank=rank, size=size).noise_batches(gen, shape, start, stop, batch))
        assert all(len(b) <= batch for b in batches)
        parts.extend(batches)
        generators.append(gen)
    assert torch.equal(torch.cat(parts), expected)  # sample i is the same noise whichever rank runs it
    after = torch.randn(shape, generator=stream)
    assert all(torch.equal(torch.randn(shape, generator=g), after) for g in generators)  # and all stay in step


def test_one_process_batches_as_before():
    """One process: batches of batch_size from the segment's start (the bytes of today's scores)."""
    gen = torch.Generator().manual_seed(0)
    sizes = [len(b) for b in World().noise_batches(gen, (2,), 10, 20, 4)]
    assert sizes == [4, 4, 2] and World().shares == {}


def test_shares_are_counted_for_every_rank():
    world = World(rank=1, size=3)
    assert world.rows(list(range(7))) == [2, 3]
    world.count("stage1_samples", 10)
    assert world.shares == {"masked_rows": [2, 2, 3], "stage1_samples": [3, 3, 4]}


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message a machine without CUDA gets")
@pytest.mark.slow
def test_gpu_script_stops_with_one_line_without_cuda(tmp_path):
    done = subprocess.run(["bash", "benchmarks/gpu.sh", str(tmp_path / "runs")], capture_output=True, text=True,
                          timeout=120, cwd=Path(__file__).resolve().parents[1])
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.strip().splitlines() == [done.stderr.strip()] and "no CUDA device" in done.stderr
    assert not (tmp_path / "runs").exists()


def test_a_failing_rank_words_a_parameter_error_as_its_flag():
    """The message rank 0 prints for another rank's user error names the flag, as one process would."""
    from lesion.cli import error_line
    from lesion.runtime.distributed import _one_line
    from lesion.errors import ParameterError
    error = ParameterError("max_rows", "must be >= 1 (got 0)")
    assert _one_line(error, error_line) == "--max-rows must be >= 1 (got 0)"
    assert _one_line(RuntimeError("simulated\nsecond line")) == "RuntimeError: simulated"


@pytest.mark.slow
def test_the_scale_benchmark_runs_its_steps_on_small_shapes(tmp_path):
    """benchmarks/gpu_scale.py (gpu.sh's part 2) on the CPU with --tiny: each step ran and was compared
    with the plan, so the script is ready for the GPU it is written for."""
    out = tmp_path / "scale.jsonl"
    done = subprocess.run([sys.executable, "benchmarks/gpu_scale.py", "--device", "cpu", "--tiny", "--samples", "2",
                           "--rows", "2", "--search-rows", "10", "--dtypes", "float32", "--models", "qwen2.5-7b",
                           "--out", str(out)], capture_output=True, text=True, timeout=300,
                          cwd=Path(__file__).resolve().parents[1], env={**os.environ, "PYTHONPATH": "."})
    assert done.returncode == 0, done.stderr[-2000:]
    (row,) = [json.loads(line) for line in out.read_text().splitlines()]
    assert row["model"] == "qwen2.5-7b-tiny" and row["neurons"] > 0 and 0 < row["search_rows"] <= 10
    for key in ("stage1_s", "floor_s", "masked_rows_per_s", "planned_stage1_s", "planned_row_s",
                "row_measured_over_planned", "effective_tflops_row"):
        assert row[key] > 0, key


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message a machine without CUDA gets")
def test_the_scale_benchmark_stops_with_one_line_without_cuda():
    done = subprocess.run([sys.executable, "benchmarks/gpu_scale.py"], capture_output=True, text=True, timeout=120,
                          cwd=Path(__file__).resolve().parents[1], env={**os.environ, "PYTHONPATH": "."})
    assert done.returncode != 0 and done.stdout == "" and len(done.stderr.strip().splitlines()) == 1
