"""Issue 34: the model studied is the model named, and nothing is written outside its place.

A revision is joined into hub-cache paths by the hub client (refs/<revision>), so one that is not
a git ref name or a commit is refused before the client sees it, wherever it enters: load_model,
--revision, or a result's recorded settings.model_revision."""
from __future__ import annotations

import pytest

from lesion.errors import ParameterError

TRAVERSALS = ["../../../../victim.txt", "/etc/passwd", "a\\b", "main\x00", "a..b", ".hidden", "x.lock",
              "", "a b", "x/", "x//y", "@", "a@{1}", "1234567890123456789012345678901234567890/../x"]


@pytest.mark.parametrize("revision", ["main", "v1.0", "refs/pr/1", "feature/x-y_z",
                                      "0123456789abcdef0123456789abcdef01234567"])
def test_branch_tag_and_commit_revisions_pass(revision):
    from lesion.model.hub import check_revision
    check_revision(revision)


@pytest.mark.parametrize("revision", TRAVERSALS)
def test_revisions_that_could_name_a_path_are_refused(revision):
    from lesion.model.hub import check_revision
    with pytest.raises(ParameterError) as e:
        check_revision(revision)
    assert e.value.parameter == "revision"


def test_load_model_refuses_a_traversal_before_the_hub_client(tmp_path, monkeypatch):
    """The hub client is never called: snapshot_download would write the commit over the target."""
    import huggingface_hub

    from lesion.model.loading import load_model

    def never(*args, **kwargs):
        raise AssertionError("the hub client was reached")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", never)
    monkeypatch.setattr(huggingface_hub.HfApi, "model_info", never)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    victim = tmp_path / "victim.txt"
    victim.write_text("must not change")
    with pytest.raises(ParameterError) as e:
        load_model("tiny-org/tiny", revision="../../../../victim.txt", progress=False)
    assert e.value.parameter == "revision"
    assert victim.read_text() == "must not change"


def test_cli_revision_traversal_is_one_line_exit_2(tmp_path, capsys, monkeypatch):
    from lesion.cli import main
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert main(["sites", "--model", "tiny-org/tiny", "--revision", "../../victim.txt", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "--revision" in err and "Traceback" not in err
    assert not (tmp_path / "hf").exists() or not any((tmp_path / "hf").rglob("*"))


@pytest.mark.parametrize("recorded", ["../../../../victim.txt", "main", "0123"])
def test_a_recorded_revision_must_be_a_commit(recorded):
    from lesion.results.settings import Settings
    with pytest.raises(ValueError):
        Settings.from_dict({"model": "tiny-org/tiny", "model_revision": recorded})


def test_a_recorded_commit_reads_back():
    from lesion.results.settings import Settings
    commit = "0123456789abcdef0123456789abcdef01234567"
    assert Settings.from_dict({"model": "o/n", "model_revision": commit}).model_revision == commit
    assert Settings.from_dict({"model": "o/n"}).model_revision is None


def test_a_hub_answering_a_non_commit_sha_is_refused(tmp_path, monkeypatch):
    """A hub (or impersonator through HF_ENDPOINT) whose sha is a path never has it used as a folder name."""
    import huggingface_hub

    from lesion.errors import ModelError
    from lesion.model import hub

    class Info:
        sha = "../../../../x"
        siblings: list = []

    def never(*args, **kwargs):
        raise AssertionError("the hub's answer was used")

    monkeypatch.setattr(huggingface_hub.HfApi, "model_info", lambda self, *a, **k: Info())
    monkeypatch.setattr(huggingface_hub, "snapshot_download", never)
    with pytest.raises(ModelError):
        hub.snapshot("tiny-org/tiny", None, progress=False)


def _edit_weights(folder, edit):
    from safetensors.torch import load_file, save_file
    file = next(folder.glob("*.safetensors"))
    weights = load_file(file)
    save_file(edit(weights), file, metadata={"format": "pt"})


def _missing(w):
    w.pop(next(k for k in w if "down_proj" in k))
    return w


def _extra(w):
    w["model.layers.0.mlp.extra.weight"] = next(iter(w.values())).clone()
    return w


def _prefixed(w):  # a PEFT-style checkpoint: every key under base_model.
    return {f"base_model.{k}": v for k, v in w.items()}


def _renamed(w):
    k = next(k for k in w if "up_proj" in k)
    w[k.replace("up_proj", "up_projection")] = w.pop(k)
    return w


@pytest.mark.parametrize("edit", [_missing, _extra, _prefixed, _renamed])
def test_weights_not_matching_the_architecture_are_refused(tmp_path, edit):
    from conftest import save_tiny

    from lesion.model.loading import load_model
    save_tiny(tmp_path / "m", seed=0)
    _edit_weights(tmp_path / "m", edit)
    with pytest.raises(ParameterError) as e:
        load_model(str(tmp_path / "m"), progress=False)
    assert e.value.parameter == "model"


def test_a_whole_tiny_model_loads(tmp_path):
    from conftest import save_tiny

    from lesion.model.loading import load_model
    save_tiny(tmp_path / "m", seed=0)
    assert load_model(str(tmp_path / "m"), progress=False).model is not None
