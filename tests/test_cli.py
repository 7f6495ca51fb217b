"""The CLI on a saved tiny model: outputs, determinism, bad input, interruption."""
import argparse
import json
import os
import select
import signal
import subprocess
import sys
import time

import pytest
import torch

from lesion.cli import main
from lesion.errors import LesionError, ModelMismatch, ParameterError, ResultError
from lesion.model.loading import load_model
from lesion.method.study import Study
from conftest import TEXT, save_tiny


def scan(tiny_dir, out, *extra):
    return main(["scan", "--model", tiny_dir, "--text", TEXT, "--samples", "6", "--quiet",
                 "--out", str(out), *extra])


def test_scan_writes_ranking_and_critical_json(tiny_dir, tmp_path, capsys):
    assert scan(tiny_dir, tmp_path, "--epsilon", "0.001", "--no-cache") == 0
    critical = json.loads((tmp_path / "critical.json").read_text())
    ranking = json.loads((tmp_path / "ranking.json").read_text())
    for key in ("model", "neurons", "baseline_ppl", "masked_ppl", "delta", "trajectory", "settings"):
        assert key in critical
    assert critical["reached"] and critical["delta"] >= 0.001
    assert critical["neurons"] == ranking["neurons"][:len(critical["neurons"])]
    assert all(":" in n for n in critical["neurons"])
    settings = critical["settings"]
    for key in ("alpha", "samples", "epsilon", "step", "seed", "dtype", "text_sha256", "tokens", "versions"):
        assert key in settings
    assert len(ranking["neurons"]) == len(ranking["scores"]) == len(ranking["positions"])
    assert ranking["scores"] == sorted(ranking["scores"], reverse=True)
    assert "critical set" in capsys.readouterr().out


def test_same_command_twice_gives_byte_identical_results(tiny_dir, tmp_path):
    for run in ("a", "b"):
        assert scan(tiny_dir, tmp_path / run, "--no-cache", "--epsilon", "0.001") == 0
    for name in ("ranking.json", "critical.json"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()


@pytest.mark.slow
def test_cached_stage1_gives_the_same_ranking(tiny_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("LESION_CACHE", str(tmp_path / "cache"))
    assert scan(tiny_dir, tmp_path / "a") == 0
    assert list((tmp_path / "cache" / "scores").glob("*.safetensors"))
    import lesion.method.rankers
    monkeypatch.setattr(lesion.method.rankers, "rank_by_noise", lambda *a, **k: pytest.fail("recomputed"))
    assert scan(tiny_dir, tmp_path / "b") == 0
    assert (tmp_path / "a/ranking.json").read_bytes() == (tmp_path / "b/ranking.json").read_bytes()


def test_threshold_not_reached_is_a_result(tiny_dir, tmp_path, capsys):
    assert scan(tiny_dir, tmp_path, "--epsilon", "40", "--max-neurons", "5") == 0
    critical = json.loads((tmp_path / "critical.json").read_text())
    assert not critical["reached"] and critical["neurons"] == []
    assert [s["n"] for s in critical["trajectory"]] == [1, 2, 3, 4, 5]
    assert "threshold not reached" in capsys.readouterr().out


def test_rank_then_identify(tiny_dir, tmp_path):
    assert main(["rank", "--model", tiny_dir, "--text", TEXT, "--samples", "4", "--quiet",
                 "--out", str(tmp_path / "r.json")]) == 0
    assert main(["identify", "--model", tiny_dir, "--ranking", str(tmp_path / "r.json"), "--quiet",
                 "--epsilon", "0.001", "--out", str(tmp_path / "c.json")]) == 0
    critical = json.loads((tmp_path / "c.json").read_text())
    assert critical["settings"]["text_sha256"] == json.loads((tmp_path / "r.json").read_text())["settings"][
        "text_sha256"]


@pytest.mark.parametrize("args, refused_by", [
    (["scan", "--text", "too short"], "text"),
    (["scan", "--alpha", "0"], "alpha"),
    (["scan", "--samples", "0"], "samples"),
    (["scan", "--epsilon", "-1"], "epsilon"),
    (["scan", "--step", "0"], "step"),
    (["scan", "--components", "down,bogus"], "components"),
    (["scan", "--dtype", "float8"], "dtype"),
    (["scan", "--ranker", "astrology"], LesionError),  # argparse's type check of --ranker
    (["mask", "model.layers.999.mlp.down_proj:5"], LesionError),
    (["mask", "model.layers.0.mlp.down_proj:99999"], LesionError),
    (["mask", "model.layers.0.mlp.down_proj"], LesionError),
])
def test_bad_input_is_one_line_exit_2(tiny_dir, tmp_path, refused, args, refused_by):
    args = args[:1] + ["--model", tiny_dir] + args[1:]
    if args[0] == "scan":
        args += ["--out", str(tmp_path / "out"), "--quiet"]
        if "--text" not in args:
            args += ["--text", TEXT]
    refused(args, refused_by)
    assert not (tmp_path / "out").exists()


def test_a_ranker_typo_names_the_closest_ranker(tiny_dir, tmp_path, refused):
    from lesion.method.rankers import check_ranker
    with pytest.raises(ParameterError) as caught:
        check_ranker("noize")
    assert caught.value.parameter == "ranker" and "'noise'" in str(caught.value)  # the suggestion is the point
    _, line = refused(["scan", "--model", tiny_dir, "--ranker", "noize", "--text", TEXT, "--quiet",
                       "--out", str(tmp_path / "out")], LesionError)
    assert "'noise'" in line


def test_bad_files_and_models(tiny_dir, tmp_path, refused):
    empty = tmp_path / "empty.txt"
    empty.write_text("  \n")
    corrupt = tmp_path / "corrupt.json"
    corrupt.write_text("{not json")
    wrong = tmp_path / "wrong.json"
    wrong.write_text('{"neurons": []}')
    cases = [
        (["scan", "--model", tiny_dir, "--text-file", str(empty)], "text_file"),
        (["scan", "--model", tiny_dir, "--text-file", str(tmp_path / "nope.txt")], "text_file"),
        (["scan", "--model", "nonexistent-org/no-such-model", "--text", TEXT], LesionError),  # the hub's refusal
        (["scan", "--model", str(tmp_path / "missing.gguf"), "--text", TEXT], "model"),
        (["identify", "--model", tiny_dir, "--ranking", str(corrupt)], ResultError),
        (["identify", "--model", tiny_dir, "--ranking", str(tmp_path / "none.json")], ResultError),
        (["identify", "--model", tiny_dir, "--ranking", str(wrong)], ResultError),
    ]
    for args, refused_by in cases:
        refused(args + ["--quiet"], refused_by)


def test_unsupported_gguf_architecture(tmp_path, capsys):
    import gguf
    import numpy as np
    path = tmp_path / "odd.gguf"
    writer = gguf.GGUFWriter(str(path), "notanarch")
    writer.add_tensor("token_embd.weight", np.zeros((4, 4), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    assert main(["scan", "--model", str(path), "--text", TEXT, "--quiet"]) == 2
    assert "notanarch is not supported" in capsys.readouterr().err


def test_ranking_from_another_model_is_refused(tiny_dir, tmp_path, refused):
    other = str(save_tiny(tmp_path / "other", seed=1))
    assert main(["rank", "--model", other, "--text", TEXT, "--samples", "2", "--quiet",
                 "--out", str(tmp_path / "r.json")]) == 0
    refused(["identify", "--model", tiny_dir, "--ranking", str(tmp_path / "r.json"), "--quiet",
             "--out", str(tmp_path / "c.json")], ModelMismatch)
    assert not (tmp_path / "c.json").exists()


@pytest.mark.parametrize("stage", ["rank", "identify"])
def test_interruption_leaves_no_file_and_no_hook(tiny_dir, tmp_path, monkeypatch, capsys, stage):
    import lesion.masking.ablation
    import lesion.method.rankers
    target = (lesion.method.rankers, "split_on_oom") if stage == "rank" else (lesion.masking.ablation, "split_on_oom")

    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(*target, interrupt)
    assert scan(tiny_dir, tmp_path / "out", "--no-cache") == 130
    assert "interrupted" in capsys.readouterr().err
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())

    lm = load_model(tiny_dir)
    study = Study.create(lm, TEXT)
    with torch.no_grad():
        before = lm.model(input_ids=study.input_ids).logits.clone()
    with pytest.raises(KeyboardInterrupt):
        if stage == "rank":
            study.rank(samples=4, progress=False, use_cache=False)
        else:
            study.identify(study.rank(samples=4, progress=False, use_cache=False), progress=False)
    assert all(not m._forward_hooks for m in lm.model.modules())
    with torch.no_grad():
        assert torch.equal(before, lm.model(input_ids=study.input_ids).logits)


@pytest.mark.slow
def test_sigint_in_a_real_process_writes_nothing(tiny_dir, tmp_path):
    out = tmp_path / "out"
    env = {k: v for k, v in os.environ.items() if k != "LESION_NO_PROGRESS"}
    env["LESION_CACHE"] = str(tmp_path / "cache")
    proc = subprocess.Popen([sys.executable, "-m", "lesion", "scan", "--model", tiny_dir, "--text", TEXT,
                             "--samples", "100000", "--out", str(out)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            # as from a terminal: a test run started in the background (`cmd &`)
                            # ignores SIGINT, and a child would inherit that and rightly keep it
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    seen, deadline = b"", time.time() + 120
    while b"stage 1" not in seen and time.time() < deadline:  # wait for Stage 1's progress bar
        if select.select([proc.stderr], [], [], 1.0)[0]:
            seen += os.read(proc.stderr.fileno(), 4096)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    err = (seen + err).decode(errors="replace")
    assert b"stage 1" in seen, err[-500:]
    assert proc.returncode == 130, err[-500:]
    assert "interrupted" in err and "Traceback" not in err
    assert not out.exists() or not any(out.iterdir())


def test_quiet_also_silences_the_gguf_dequantisation_bar(capsys):
    import transformers.modeling_gguf_pytorch_utils as gguf_utils

    from lesion.model.loading import _gguf_progress
    for enabled in (False, True):
        with _gguf_progress(enabled):
            for _ in gguf_utils.tqdm(range(3), desc="dequantising"):
                pass
        assert ("dequantising" in capsys.readouterr().err) == enabled
    assert not hasattr(gguf_utils.tqdm, "keywords")  # the real tqdm is back


def test_every_command_accepts_quiet():
    """--help promises --quiet on every command: a script passing it everywhere must not break."""
    from lesion.cli import build_parser
    parser = build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices
    missing = [name for name, sub in commands.items()
               if not any("--quiet" in a.option_strings for a in sub._actions)]
    assert len(commands) >= 15 and missing == []
