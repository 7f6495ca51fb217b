"""The severe cases of issue 10: each was a wrong or unsafe result given without a word."""
import json
import os
import pickle
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import AutoConfig, AutoModelForCausalLM

from lesion.cli import main
from lesion.errors import ResultError
from lesion.model.loading import load_model
from conftest import COMMON, FAMILIES, TEXT, char_tokenizer, save_tiny


# --- 1. a long text is kept, checked and used, never replaced by the default ----------------

@pytest.fixture(scope="module")
def long_context_model(tmp_path_factory):
    """A tiny Llama that takes 4096 positions, so that a 2,500-character text (one token per
    character) fits its context."""
    path = tmp_path_factory.mktemp("long") / "llama"
    torch.manual_seed(0)
    config = AutoConfig.for_model("llama", **{**COMMON, **FAMILIES["llama"], "max_position_embeddings": 4096})
    AutoModelForCausalLM.from_config(config).save_pretrained(path)
    char_tokenizer().save_pretrained(path)
    return str(path)


def long_text() -> str:
    sentence = "Sentence {} of a long text about rivers, bridges and the towns along them. "
    return "".join(sentence.format(i) for i in range(40))[:2500]


@pytest.mark.slow
def test_long_text_survives_rank_identify_minimal_mechanism(long_context_model, tmp_path):
    from lesion.texts.text import text_hash
    text = long_text()
    assert len(text) > 2000
    (tmp_path / "long.txt").write_text(text)
    run = tmp_path / "run"
    assert main(["rank", "--model", long_context_model, "--text-file", str(tmp_path / "long.txt"), "--samples", "2",
                 "--quiet", "--out", str(run / "ranking.json")]) == 0
    ranking = json.loads((run / "ranking.json").read_text())
    assert ranking["settings"]["text"] is None  # kept beside it instead
    assert (run / ranking["settings"]["text_file"]).read_text() == text
    # No --text and no --model: the ranking's own text and model are used.
    assert main(["identify", "--ranking", str(run / "ranking.json"), "--epsilon", "0.0005", "--max-neurons", "64",
                 "--quiet", "--out", str(run / "critical.json")]) == 0
    assert main(["minimal", "--run", str(run), "--pool", "3", "--max-size", "1", "--quiet"]) == 0
    assert main(["mechanism", "--run", str(run), "--quiet"]) == 0
    epsilon = json.loads((run / "critical.json").read_text())["settings"]["epsilon"]
    results = ["ranking.json", "critical.json", f"minimal-eps{epsilon:g}.json", "mechanism.json"]
    tokens = len(char_tokenizer()(text).input_ids)
    assert tokens == len(text) > 2000  # one per character: all of the long text, not Bookends
    for name in results:
        settings = json.loads((run / name).read_text())["settings"]
        assert settings["text_sha256"] == text_hash(text), name
        assert settings["tokens"] == tokens, name
        assert settings["model"] == long_context_model, name

    # An edited text file is refused, not used and not replaced by the default.
    (run / ranking["settings"]["text_file"]).write_text(text.replace("rivers", "canals"))
    assert main(["identify", "--ranking", str(run / "ranking.json"), "--quiet",
                 "--out", str(tmp_path / "again.json")]) == 2
    assert not (tmp_path / "again.json").exists()


def test_a_ranking_that_left_its_text_out_needs_the_text_back(tiny_dir, tmp_path, capsys, refused):
    """Rankings written before this fix have text null: refused, unless the same text is given."""
    assert main(["rank", "--model", tiny_dir, "--text", TEXT, "--samples", "2", "--quiet",
                 "--out", str(tmp_path / "r.json")]) == 0
    data = json.loads((tmp_path / "r.json").read_text())
    data["settings"]["text"] = None
    (tmp_path / "r.json").write_text(json.dumps(data))
    identify = ["identify", "--model", tiny_dir, "--ranking", str(tmp_path / "r.json"), "--quiet",
                "--epsilon", "0.001", "--out", str(tmp_path / "c.json")]
    refused(identify, ResultError)
    assert main(identify + ["--text", TEXT]) == 0
    assert json.loads((tmp_path / "c.json").read_text())["settings"]["text"] == TEXT


# --- 2. no code from the cache ----------------------------------------------------------------

class Planted:
    """Unpickling this creates the marker file: what an attacker's pickle would do."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


def test_a_pickle_planted_in_the_cache_does_not_run(tiny_dir, tmp_path):
    cache = Path(os.environ["LESION_CACHE"]) / "scores"
    scan = ["rank", "--model", tiny_dir, "--text", TEXT, "--samples", "3", "--quiet"]
    assert main(scan + ["--out", str(tmp_path / "a.json")]) == 0
    entries = list(cache.glob("*.safetensors"))
    assert len(entries) == 1
    marker = tmp_path / "pwned"
    payload = pickle.dumps(Planted(str(marker)))
    entries[0].write_bytes(payload)  # under the name the cache reads
    entries[0].with_suffix(".pt").write_bytes(payload)  # and under the name older lesion read
    assert main(scan + ["--out", str(tmp_path / "b.json")]) == 0
    assert not marker.exists()
    assert (tmp_path / "a.json").read_bytes() == (tmp_path / "b.json").read_bytes()  # recomputed, same bytes


def test_a_cache_entry_of_the_wrong_shape_is_recomputed(tiny_dir, tmp_path):
    from safetensors.torch import save_file
    cache = Path(os.environ["LESION_CACHE"]) / "scores"
    scan = ["rank", "--model", tiny_dir, "--text", TEXT, "--samples", "3", "--quiet"]
    assert main(scan + ["--out", str(tmp_path / "a.json")]) == 0
    entry = next(cache.glob("*.safetensors"))
    save_file({"values": torch.zeros(7)}, str(entry))
    assert main(scan + ["--out", str(tmp_path / "b.json")]) == 0
    assert (tmp_path / "a.json").read_bytes() == (tmp_path / "b.json").read_bytes()


def test_batch_size_and_scorer_version_are_in_the_key(tiny_dir, tmp_path, monkeypatch):
    import lesion.method.cache
    cache = Path(os.environ["LESION_CACHE"]) / "scores"
    scan = ["rank", "--model", tiny_dir, "--text", TEXT, "--samples", "4", "--quiet", "--out", str(tmp_path / "r.json")]
    assert main(scan + ["--batch-size", "1"]) == 0
    assert main(scan + ["--batch-size", "4"]) == 0
    assert len(list(cache.glob("*.safetensors"))) == 2
    monkeypatch.setattr(lesion.method.cache, "SCORER_VERSION", lesion.method.cache.SCORER_VERSION + 1)
    assert main(scan + ["--batch-size", "4"]) == 0
    assert len(list(cache.glob("*.safetensors"))) == 3


def test_orphan_temp_files_are_removed_but_fresh_ones_kept(tmp_path):
    from lesion.runtime.files import ORPHAN_AGE_S, remove_orphans
    old, fresh, entry = tmp_path / ".a.tmp", tmp_path / ".b.tmp", tmp_path / "c.safetensors"
    old_dir = tmp_path / "model.tmp123"
    for f in (old, fresh, entry):
        f.write_text("x")
    old_dir.mkdir()
    (old_dir / "weights").write_text("x")
    long_ago = os.stat(old).st_mtime - 2 * ORPHAN_AGE_S
    for f in (old, old_dir):
        os.utime(f, (long_ago, long_ago))
    remove_orphans(tmp_path)
    assert not old.exists() and not old_dir.exists() and fresh.exists() and entry.exists()


def test_writing_a_result_removes_its_own_old_temp_files_only(tmp_path):
    from lesion.runtime.files import write_json
    dead = 999_999_999  # no such process: the run that wrote it is gone
    mine = tmp_path / f".r.json.lesion-{dead}-abc.tmp"
    others = [tmp_path / ".notes.txt.abc.tmp", tmp_path / f".notes.txt.lesion-{dead}-abc.tmp",
              tmp_path / ".r.json.abc.tmp", tmp_path / ".r.json.cfg"]  # another file's, or not lesion's
    for f in (mine, *others):
        f.write_text("half a file")
        os.utime(f, (0, 0))  # all from 1970: old by any age rule
    write_json(tmp_path / "r.json", {"a": 1})
    assert not mine.exists() and all(f.exists() for f in others)  # a user's folder: only lesion's own temp files go


def test_a_corrupt_dequantised_model_cache_is_rebuilt(tiny_dir, tmp_path):
    from lesion.model.model_cache import _load_cached
    broken = tmp_path / "models" / "abc"
    broken.mkdir(parents=True)
    (broken / "config.json").write_text("{not json")
    assert _load_cached(broken, {}, "float32") is None
    assert not broken.exists()  # the next load writes a fresh copy
    copy = tmp_path / "copy"
    shutil.copytree(tiny_dir, copy)
    loaded = _load_cached(copy, {}, "float32")
    assert loaded is not None


@pytest.mark.slow
def test_code_shipped_with_a_model_never_runs(tmp_path):
    folder = save_tiny(tmp_path / "remote")
    marker = tmp_path / "ran"
    (folder / "evil.py").write_text(
        f"open({str(marker)!r}, 'w').close()\n"
        "from transformers import LlamaConfig, LlamaForCausalLM\n"
        "class EvilConfig(LlamaConfig):\n    model_type = 'evil_llama'\n"
        "class EvilModel(LlamaForCausalLM):\n    config_class = EvilConfig\n")
    config = json.loads((folder / "config.json").read_text())
    # A model type transformers does not know: only the folder's own code could load it.
    config["model_type"] = "evil_llama"
    config["auto_map"] = {"AutoModelForCausalLM": "evil.EvilModel", "AutoConfig": "evil.EvilConfig"}
    (folder / "config.json").write_text(json.dumps(config))
    # A real process with an open stdin: trust_remote_code=None would stop there to ask.
    done = subprocess.run([sys.executable, "-m", "lesion", "sites", "--model", str(folder), "--quiet"],
                          input="y\n", capture_output=True, text=True, timeout=300,
                          env={**os.environ, "LESION_NO_PROGRESS": "1"})
    assert not marker.exists()
    # refused as bad input (one line, exit 2), not a crash inside transformers; the marker says no code ran
    assert done.returncode == 2 and done.stderr.startswith("lesion: error: ") and done.stderr.count("\n") == 1, \
        done.stderr
    assert "Traceback" not in done.stderr


# --- 3. outputs ---------------------------------------------------------------------------------

def test_a_device_node_or_pipe_given_as_out_is_untouched(tiny_dir, tmp_path, capsys):
    nodes = {"fifo": tmp_path / "fifo"}
    os.mkfifo(nodes["fifo"])
    if os.geteuid() == 0:
        nodes["null"] = tmp_path / "null"
        os.mknod(nodes["null"], stat.S_IFCHR | 0o666, os.makedev(1, 3))
    for name, node in nodes.items():
        before = os.stat(node)
        assert main(["rank", "--model", tiny_dir, "--text", TEXT, "--samples", "2", "--quiet",
                     "--out", str(node)]) == 2, name
        assert "not a regular file" in capsys.readouterr().err
        after = os.stat(node)
        assert (after.st_ino, after.st_mode, after.st_rdev) == (before.st_ino, before.st_mode, before.st_rdev)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(n.name for n in nodes.values())


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o027, 0o640), (0o077, 0o600)])
def test_results_are_as_readable_as_the_umask_says(tmp_path, umask, mode):
    from lesion.runtime.files import write_json
    old = os.umask(umask)
    try:
        path = write_json(tmp_path / "r.json", {"a": 1})
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(path).st_mode) == mode


def test_a_failed_write_is_one_line_and_leaves_nothing(tmp_path, monkeypatch):
    import lesion.runtime.files
    from lesion.errors import LesionError

    def full_disk(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(lesion.runtime.files.os, "fsync", full_disk)
    with pytest.raises(LesionError, match="No space left on device"):
        lesion.runtime.files.write_json(tmp_path / "r.json", {"a": 1})
    assert list(tmp_path.iterdir()) == []


# --- 5. model identity -------------------------------------------------------------------------

def test_one_changed_weight_changes_the_fingerprint_and_its_ranking_is_refused(tiny_dir, tmp_path, capsys):
    import shutil
    tampered = tmp_path / "tampered"
    shutil.copytree(tiny_dir, tampered)
    lm = load_model(str(tampered))
    with torch.no_grad():
        lm.model.model.layers[1].mlp.down_proj.weight[7, 3] = 0.0  # one value of 2x32x64 + ...
    lm.model.save_pretrained(tampered)
    intact, copy = load_model(tiny_dir), load_model(str(tampered))
    assert intact.fingerprint() != copy.fingerprint()
    assert load_model(tiny_dir).fingerprint() == intact.fingerprint()  # and it is stable

    assert main(["rank", "--model", tiny_dir, "--text", TEXT, "--samples", "2", "--quiet",
                 "--out", str(tmp_path / "r.json")]) == 0
    identify = ["identify", "--ranking", str(tmp_path / "r.json"), "--quiet", "--out", str(tmp_path / "c.json")]
    assert main(identify + ["--model", str(tampered)]) == 2
    assert "made on another model" in capsys.readouterr().err
    data = json.loads((tmp_path / "r.json").read_text())
    del data["settings"]["model_fingerprint"]
    (tmp_path / "r.json").write_text(json.dumps(data))
    assert main(identify + ["--model", tiny_dir]) == 2
    assert "records no model_fingerprint" in capsys.readouterr().err
    assert not (tmp_path / "c.json").exists()


def test_fingerprint_is_computed_once_per_loaded_model(tiny_dir, monkeypatch):
    import lesion.model.loading
    lm = load_model(tiny_dir)
    first = lm.fingerprint()
    monkeypatch.setattr(lesion.model.loading, "weights_fingerprint", lambda model: pytest.fail("hashed again"))
    assert lm.fingerprint() == first


# --- provenance, memory, startup ---------------------------------------------------------------

def test_every_result_carries_provenance_and_only_run_json_a_date(tiny_dir, tmp_path):
    run = tmp_path / "run"
    assert main(["scan", "--model", tiny_dir, "--text", TEXT, "--samples", "3", "--epsilon", "0.001",
                 "--quiet", "--out", str(run)]) == 0
    for name in ("ranking.json", "critical.json"):
        settings = json.loads((run / name).read_text())["settings"]
        for key in ("model", "model_fingerprint", "dtype", "device", "text_sha256", "tokens"):
            assert settings[key] not in (None, ""), (name, key)
        assert {"lesion", "git_commit", "torch", "transformers"} <= set(settings["versions"])
    assert "finished" in json.loads((run / "run.json").read_text())


def test_cpu_out_of_memory_also_halves_the_batch():
    from lesion.runtime.batching import is_oom, split_on_oom
    cpu = RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate memory: "
                       "you tried to allocate 1099511627776 bytes.")
    assert is_oom(cpu) and not is_oom(RuntimeError("shape mismatch"))
    sizes = []

    def fn(items):
        sizes.append(len(items))
        if len(items) > 2:
            raise cpu
        return list(items)

    assert split_on_oom(fn, list(range(8))) == list(range(8))
    assert sizes[:3] == [8, 4, 2]


def test_help_imports_neither_torch_nor_transformers():
    code = ("import sys; from lesion.cli import build_parser; build_parser(); "
            "print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.stdout.strip() == "[]", done.stderr


# --- issue 18: every result reproduces itself or is refused --------------------------------

OTHER = "A heel found on this sentence is scored on this sentence, never on the default one."


def _search(tiny_dir, out, *extra):
    assert main(["search", "--model", tiny_dir, "--samples", "3", "--epsilon", "0.0005", "--pool", "8",
                 "--max-rows", "400", "--certify-rows", "20", "--quiet", "--out", str(out), *extra]) == 0
    return json.loads(Path(out).read_text())


@pytest.mark.parametrize("ablation", ["zero", "mean"])
def test_mask_reproduces_a_heel_on_its_own_text_and_ablation(tiny_dir, tmp_path, capsys, ablation):
    """The old mask scored the default sentence with zeroing, whatever the heel recorded."""
    from lesion.replay.recorded import reproduce
    from lesion.results import Heel
    heel = _search(tiny_dir, tmp_path / "heel.json", "--text", OTHER, "--ablation", ablation)
    assert heel["neurons"]
    capsys.readouterr()
    assert main(["mask", "--model", tiny_dir, "--neurons", str(tmp_path / "heel.json"), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert f"{ablation} ablation" in out and "NO" not in out and "yes" in out
    rows = reproduce(Heel.load(tmp_path / "heel.json"), load_model(tiny_dir, progress=False))
    assert len(rows) == 1 and rows[0].tokens == heel["texts"][0]["tokens"]
    assert abs(rows[0].delta - heel["texts"][0]["delta"]) <= 1e-6 * max(1, abs(heel["delta"]))


def test_mask_reproduces_a_multi_text_heel_on_every_text(tiny_dir, tmp_path, capsys):
    """A multi-text heel records settings.texts (settings.text is null): a row per text."""
    from lesion.replay.recorded import reproduce
    from lesion.results import Heel
    heel = _search(tiny_dir, tmp_path / "heel.json", "--text", OTHER, "--text", TEXT)
    assert heel["settings"]["text"] is None and len(heel["settings"]["texts"]) == 2
    rows = reproduce(Heel.load(tmp_path / "heel.json"), load_model(tiny_dir, progress=False))
    assert [r.name for r in rows] == ["text1", "text2"]
    for row, recorded in zip(rows, heel["texts"]):
        assert row.reproduced and row.tokens == recorded["tokens"]


def test_an_override_is_used_and_said(tiny_dir, tmp_path, capsys):
    _search(tiny_dir, tmp_path / "heel.json", "--text", OTHER, "--ablation", "mean")
    capsys.readouterr()
    assert main(["mask", "--model", tiny_dir, "--neurons", str(tmp_path / "heel.json"), "--ablation", "zero",
                 "--text", TEXT, "--quiet"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "--ablation zero overrides the mean ablation" in out and "not one" in out and "zero ablation" in out


def test_a_stage1_cache_entry_with_a_position_past_the_text_is_recomputed(tiny_dir, tmp_path):
    """The old cache check looked at shapes only: a score of 4.3e9 at position 10^12 was used."""
    from safetensors.torch import load_file, save_file
    cache = Path(os.environ["LESION_CACHE"]) / "scores"
    rank = ["rank", "--model", tiny_dir, "--text", TEXT, "--samples", "3", "--quiet"]
    assert main(rank + ["--out", str(tmp_path / "a.json")]) == 0
    entry = next(cache.glob("*.safetensors"))
    planted = load_file(str(entry))
    planted["values"][5], planted["positions"][5] = 4.3e9, 10 ** 12
    save_file(planted, str(entry))
    assert main(rank + ["--out", str(tmp_path / "b.json")]) == 0
    assert (tmp_path / "a.json").read_bytes() == (tmp_path / "b.json").read_bytes()
    planted = load_file(str(entry))
    planted["values"][5] = float("nan")
    save_file(planted, str(entry))
    assert main(rank + ["--out", str(tmp_path / "c.json")]) == 0
    assert (tmp_path / "a.json").read_bytes() == (tmp_path / "c.json").read_bytes()


def _cached_copy(tiny_dir, target):
    from lesion.model.model_cache import _save_atomically
    lm = load_model(tiny_dir, progress=False)
    return _save_atomically(lm.model, lm.tokenizer, target, "float32")


def test_one_changed_weight_in_the_dequantised_cache_is_rebuilt(tiny_dir, tmp_path, capsys):
    from safetensors.torch import load_file, save_file
    from lesion.model.model_cache import _load_cached
    from lesion.model.fingerprints import weights_fingerprint
    target = tmp_path / "models" / "key"
    digest = _cached_copy(tiny_dir, target)
    tokenizer, model, checked = _load_cached(target, {}, "float32")
    assert checked == digest == weights_fingerprint(model)
    assert _load_cached(target, {"dtype": torch.bfloat16}, "bfloat16") is not None  # other dtype: files' SHA-256
    weights = load_file(str(target / "model.safetensors"))
    name = next(iter(weights))
    weights[name].view(-1)[0] += 0.001
    save_file(weights, str(target / "model.safetensors"), metadata={"format": "pt"})
    capsys.readouterr()
    assert _load_cached(target, {}, "float32") is None
    assert not target.exists()  # the next load rebuilds it from the GGUF
    err = capsys.readouterr().err
    assert "does not match the fingerprint recorded" in err and len(err.strip().splitlines()) == 1


def test_a_killed_dequantisation_is_swept_on_every_load(tiny_dir, monkeypatch):
    import lesion.model.loading
    models = Path(os.environ["LESION_CACHE"]) / "models-sweep"
    monkeypatch.setattr(lesion.model.loading, "cache_dir", lambda: models.parent / "sweep-root")
    folder = models.parent / "sweep-root" / "models"
    dead, alive = folder / "0123.tmp999999999", folder / f"4567.tmp{os.getpid()}"
    for tmp in (dead, alive):
        tmp.mkdir(parents=True)
        (tmp / "model.safetensors").write_bytes(b"x" * 100)
    load_model(tiny_dir, progress=False)  # a folder, not a GGUF: the sweep runs all the same
    assert not dead.exists() and alive.exists()


def test_out_through_a_symbolic_link_replaces_the_target_not_the_link(tiny_dir, tmp_path):
    target = tmp_path / "real" / "ranking.json"
    target.parent.mkdir()
    target.write_text("old")
    link = tmp_path / "link.json"
    link.symlink_to(target)
    assert main(["rank", "--model", tiny_dir, "--text", TEXT, "--samples", "3", "--quiet", "--out", str(link)]) == 0
    assert link.is_symlink() and json.loads(target.read_text())["ranker"] == "noise"


def test_a_run_folder_is_written_as_a_unit(tiny_dir, tmp_path, monkeypatch):
    """A failure while the files are swapped in leaves the earlier run as it was, and a new
    folder empty: never a critical.json without its fingerprints.json and run.json."""
    from lesion.errors import LesionError
    from lesion.results import ScanResult
    run = tmp_path / "run"
    assert main(["scan", "--model", tiny_dir, "--text", TEXT, "--samples", "3", "--epsilon", "0.001", "--quiet",
                 "--out", str(run)]) == 0
    before = {p.name: p.read_bytes() for p in run.iterdir()}
    scan = ScanResult.load(run)
    other = ScanResult(scan.ranking, scan.critical, scan.fingerprints, {"load_s": 1.0}, "another day")
    real_replace, calls = os.replace, []

    def failing_replace(src, dst):
        calls.append(dst)
        if len(calls) == 3:
            raise OSError(28, "No space left on device")
        return real_replace(src, dst)
    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(LesionError, match="No space left"):
        other.save(run)
    assert {p.name: p.read_bytes() for p in run.iterdir()} == before  # no temp or backup left either
    calls.clear()
    with pytest.raises(LesionError):
        other.save(tmp_path / "fresh")
    assert list((tmp_path / "fresh").iterdir()) == []
    monkeypatch.setattr(os, "replace", real_replace)
    other.save(run)
    assert json.loads((run / "run.json").read_text())["finished"] == "another day"


def test_a_failed_write_leaves_no_orphan_text_file(tmp_path, monkeypatch):
    from lesion.errors import LesionError
    from lesion.results import save_result
    text = "x" * 3000
    from lesion.texts.text import text_hash
    result = {"model": "m", "settings": {"text": text, "text_sha256": text_hash(text)}}
    real_replace = os.replace

    def failing_replace(src, dst):
        if str(dst).endswith(".json"):
            raise OSError(28, "No space left on device")
        return real_replace(src, dst)
    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(LesionError):
        save_result(tmp_path / "heel.json", result)
    assert list(tmp_path.iterdir()) == []


def test_a_run_without_a_set_removes_the_fingerprints_of_the_last_one(tiny_dir, tmp_path):
    run = tmp_path / "run"
    base = ["scan", "--model", tiny_dir, "--text", TEXT, "--samples", "3", "--quiet", "--out", str(run)]
    assert main(base + ["--epsilon", "0.001"]) == 0
    assert (run / "fingerprints.json").exists()
    assert main(base + ["--epsilon", "50", "--max-neurons", "3"]) == 0
    assert not json.loads((run / "critical.json").read_text())["reached"]
    assert not (run / "fingerprints.json").exists()


def test_study_scan_is_the_library_call_behind_lesion_scan(tiny_dir, tmp_path):
    from lesion import Study
    from lesion.results import ScanResult
    lm = load_model(tiny_dir, progress=False)
    scan = Study.create(lm, TEXT).scan(samples=3, epsilon=0.001, progress=False)
    ranking, critical = scan
    scan.save(tmp_path / "lib")
    assert main(["scan", "--model", tiny_dir, "--text", TEXT, "--samples", "3", "--epsilon", "0.001", "--quiet",
                 "--out", str(tmp_path / "cli")]) == 0
    for name in ("ranking.json", "critical.json", "fingerprints.json"):
        assert (tmp_path / "lib" / name).read_bytes() == (tmp_path / "cli" / name).read_bytes()
    assert ScanResult.load(tmp_path / "lib").critical == critical


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without a GPU")
def test_cuda_with_device_map_auto_is_refused_without_a_gpu(tiny_dir, capsys):
    assert main(["mask", "--model", tiny_dir, "--device", "cuda:0", "--device-map", "auto",
                 "model.layers.0.mlp.down_proj:1"]) == 2
    assert "no CUDA device is available" in capsys.readouterr().err


def test_two_text_files_of_one_name_stay_two_texts(tmp_path):
    import argparse
    from lesion.cli.search import texts_from
    for folder, text in (("a", TEXT), ("b", OTHER)):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "de.txt").write_text(text)
    files = [str(tmp_path / "a" / "de.txt"), str(tmp_path / "b" / "de.txt")]
    args = argparse.Namespace(text=[], text_file=files, texts=None, passages=None, corpus="", seed=0)
    names, texts = texts_from(args)
    assert names == files and texts == [TEXT, OTHER]
