"""Hub ids end to end: a tiny Llama served on 127.0.0.1 in the hub's URL layout, reached through
HF_ENDPOINT, cached under HF_HOME in a temporary folder, by real `lesion` processes (huggingface_hub
reads its environment once, at import). Faults: a connection dropped mid-file, a file of the wrong
size, a repository with only pickled weights, one that ships code; each refused in one line,
leaving nothing in the cache that a later run would take for a file."""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

from conftest import TEXT, save_tiny

REPO = "tiny-org/tiny-llama"
SERVER_LIFETIME_S = 900  # the server stops by itself even if a test never reaches its teardown
TOKEN = "hf_test_token"
STALL_S = 20


class FakeHub:
    """Repositories as {commit: {file name: bytes}}, branches, and the faults the next requests meet."""

    def __init__(self):
        self.commits: dict[str, dict[str, dict[str, bytes]]] = {}
        self.branches: dict[str, dict[str, str]] = {}
        self.private: set[str] = set()
        # "drop": the connection closes mid-file; "short": fewer bytes than announced; "stall": half the file,
        # then nothing for STALL_S (the client is killed meanwhile)
        self.fault: str | None = None
        self.requests: list[tuple[str, str]] = []
        self.stalled = threading.Event()  # set once a stalled transfer has sent its half

    def add(self, repo: str, files: dict[str, bytes], branch: str = "main") -> str:
        commit = hashlib.sha1(json.dumps({n: hashlib.sha256(b).hexdigest() for n, b in sorted(files.items())})
                              .encode()).hexdigest()
        self.commits.setdefault(repo, {})[commit] = dict(files)
        self.branches.setdefault(repo, {})[branch] = commit
        return commit

    def requested(self, suffix: str) -> bool:
        return any(path.endswith(suffix) for _, path in self.requests)


def _git_oid(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def _handler(hub: FakeHub):
    class Handler(BaseHTTPRequestHandler):
        timeout = 30  # a client that stalls does not hold a thread for ever

        def log_message(self, *args):  # quiet
            pass

        def do_HEAD(self):
            self._serve(body=False)

        def do_GET(self):
            self._serve(body=True)

        def _error(self, status: int, code: str):
            self.send_response(status)
            self.send_header("X-Error-Code", code)
            self.send_header("Content-Type", "application/json")
            payload = json.dumps({"error": code}).encode()
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def _json(self, data):
            payload = json.dumps(data).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def _commit(self, repo: str, rev: str) -> str | None:
            if repo not in hub.commits:
                self._error(404, "RepoNotFound")
                return None
            if repo in hub.private and self.headers.get("Authorization") != f"Bearer {TOKEN}":
                self._error(401, "RepoNotFound")
                return None
            commit = hub.branches[repo].get(rev, rev)
            if commit not in hub.commits[repo]:
                self._error(404, "RevisionNotFound")
                return None
            return commit

        def _serve(self, body: bool):
            path = unquote(urlsplit(self.path).path)
            hub.requests.append((self.command, path))
            parts = path.strip("/").split("/")
            if parts[:2] == ["api", "models"] and len(parts) == 4:  # no revision: the default branch
                parts += ["revision", "main"]
            if parts[:2] == ["api", "models"] and len(parts) >= 6 and parts[4] in ("revision", "tree"):
                repo, rev = "/".join(parts[2:4]), "/".join(parts[5:])
                commit = self._commit(repo, rev)
                if commit is None:
                    return
                files = hub.commits[repo][commit]
                if parts[4] == "revision":
                    self._json({"id": repo, "sha": commit, "private": repo in hub.private,
                                "siblings": [{"rfilename": n} for n in sorted(files)]})
                else:
                    self._json([{"type": "file", "path": n, "size": len(b), "oid": _git_oid(b),
                                 **({"lfs": {"oid": hashlib.sha256(b).hexdigest(), "size": len(b),
                                             "pointerSize": 134}} if n.endswith(".safetensors") else {})}
                                for n, b in sorted(files.items())])
                return
            if len(parts) >= 5 and parts[2] == "resolve":
                repo, rev, name = "/".join(parts[:2]), parts[3], "/".join(parts[4:])
                commit = self._commit(repo, rev)
                if commit is None:
                    return
                data = hub.commits[repo][commit].get(name)
                if data is None:
                    self._error(404, "EntryNotFound")
                    return
                self._file(commit, name, data, body)
                return
            self._error(404, "RepoNotFound")

        def _file(self, commit: str, name: str, data: bytes, body: bool):
            lfs = name.endswith(".safetensors")
            start = 0
            if body and self.headers.get("Range", "").startswith("bytes="):
                start = int(self.headers["Range"][len("bytes="):].split("-")[0])
            faulty = body and lfs and hub.fault is not None
            sent = data[start:]
            if faulty and hub.fault == "short":
                sent = sent[:-16]  # announced, and sent, 16 bytes short of the file the HEAD described
            self.send_response(206 if start else 200)
            self.send_header("X-Repo-Commit", commit)
            self.send_header("ETag", f'"{_git_oid(data)}"')
            if lfs:
                self.send_header("X-Linked-Etag", f'"{hashlib.sha256(data).hexdigest()}"')
                self.send_header("X-Linked-Size", str(len(data)))
            if start:
                self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
            self.send_header("Content-Length", str(len(sent)))
            self.end_headers()
            if not body:
                return
            if faulty and hub.fault == "stall":
                self.wfile.write(sent[:len(sent) // 2])
                self.wfile.flush()
                hub.stalled.set()
                time.sleep(STALL_S)
                self.close_connection = True
                return
            if faulty and hub.fault == "drop":
                # Half the file at first; a resumed request gets its headers and nothing: the connection closes.
                self.wfile.write(sent[:len(sent) // 2] if start == 0 else b"")
                self.wfile.flush()
                self.close_connection = True
                return
            self.wfile.write(sent)

    return Handler


@pytest.fixture
def hub():
    """A fake hub on 127.0.0.1 for one test: (FakeHub, its URL); stopped at teardown, or by itself."""
    fake = FakeHub()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(fake))
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2}, daemon=True)
    thread.start()
    timer = threading.Timer(SERVER_LIFETIME_S, server.shutdown)
    timer.daemon = True
    timer.start()
    try:
        yield fake, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        timer.cancel()
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def _tiny_files(folder: Path, seed: int) -> dict[str, bytes]:
    save_tiny(folder, seed=seed)
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}


@pytest.fixture(scope="module")
def tiny_files(tmp_path_factory) -> dict[int, dict[str, bytes]]:
    """The files of two tiny Llamas (seeds 0 and 1): two commits of one repository."""
    return {seed: _tiny_files(tmp_path_factory.mktemp(f"hub-tiny{seed}"), seed) for seed in (0, 1)}


def lesion(url: str, hf_home: Path, *argv: str, offline: bool = False, token: str | None = None):
    env = {k: v for k, v in os.environ.items()
           if k not in ("HF_TOKEN", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_HUB_CACHE", "HF_ENDPOINT")}
    env.update(HF_ENDPOINT=url, HF_HOME=str(hf_home), LESION_NO_PROGRESS="1", HF_HUB_DISABLE_TELEMETRY="1",
               HF_HUB_DOWNLOAD_TIMEOUT="10", HF_HUB_ETAG_TIMEOUT="10")
    if offline:
        env["HF_HUB_OFFLINE"] = "1"
    if token is not None:
        env["HF_TOKEN"] = token
    return subprocess.run([sys.executable, "-m", "lesion", *argv, "--quiet"], capture_output=True, text=True,
                          timeout=300, env=env, stdin=subprocess.DEVNULL)


def one_line_error(done) -> str:
    err = done.stderr.strip()
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    return err


def cached_blobs(hf_home: Path) -> list[Path]:
    """Every file under the hub cache's blobs: complete files, and anything partial left behind."""
    return sorted(p for p in (hf_home / "hub").rglob("blobs/*") if p.is_file())


def weights_in_cache(hf_home: Path) -> list[Path]:
    return [p for p in (hf_home / "hub").rglob("*.safetensors")] if (hf_home / "hub").exists() else []


def scan(url, hf_home, out, *extra):
    return lesion(url, hf_home, "scan", "--model", REPO, *extra, "--text", TEXT, "--samples", "8",
                  "--epsilon", "0.001", "--out", str(out))


# --- tests ----------------------------------------------------------------------------------------

@pytest.mark.slow
def test_a_pinned_commit_downloads_once_and_is_named_in_every_result(hub, tiny_files, tmp_path):
    fake, url = hub
    commit_a = fake.add(REPO, tiny_files[0])
    commit_b = fake.add(REPO, tiny_files[1])  # main moves on
    hf_home = tmp_path / "hf"
    done = scan(url, hf_home, tmp_path / "run-a", "--revision", commit_a)
    assert done.returncode == 0, done.stderr
    for name in ("ranking.json", "critical.json"):
        settings = json.loads((tmp_path / "run-a" / name).read_text())["settings"]
        assert settings["model"] == REPO and settings["model_revision"] == commit_a
    snapshot = hf_home / "hub" / f"models--{REPO.replace('/', '--')}" / "snapshots" / commit_a
    assert sorted(p.name for p in snapshot.iterdir()) == sorted(tiny_files[0])
    # Offline and with the commit already cached, nothing is asked of the server.
    asked = len(fake.requests)
    done = lesion(url, hf_home, "sites", "--model", REPO, "--revision", commit_a, offline=True)
    assert done.returncode == 0, done.stderr
    assert len(fake.requests) == asked
    # The result made at commit A, read against main (commit B): refused; without --model, its commit loads.
    run_a = str(tmp_path / "run-a" / "critical.json")
    err = one_line_error(lesion(url, hf_home, "verify", "--against", run_a, "--model", REPO))
    assert "--revision" in err and commit_a in err and commit_b in err
    done = lesion(url, hf_home, "verify", "--against", run_a)
    assert done.returncode == 0, done.stderr
    assert not fake.requested(".bin") and not fake.requested(".py")


@pytest.mark.slow
def test_main_resolves_to_its_commit(hub, tiny_files, tmp_path):
    fake, url = hub
    commit = fake.add(REPO, tiny_files[0])
    hf_home = tmp_path / "hf"
    done = lesion(url, hf_home, "rank", "--model", REPO, "--text", TEXT, "--samples", "2",
                  "--out", str(tmp_path / "ranking.json"))
    assert done.returncode == 0, done.stderr
    assert json.loads((tmp_path / "ranking.json").read_text())["settings"]["model_revision"] == commit
    # The branch is resolved again offline, from the cache's ref.
    done = lesion(url, hf_home, "sites", "--model", REPO, offline=True)
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize("fault", ["drop", "short"])
@pytest.mark.slow
def test_a_failed_download_leaves_nothing_and_the_next_run_succeeds(hub, tiny_files, tmp_path, fault):
    fake, url = hub
    commit = fake.add(REPO, tiny_files[0])
    hf_home = tmp_path / "hf"
    fake.fault = fault
    err = one_line_error(lesion(url, hf_home, "sites", "--model", REPO, "--revision", commit))
    assert REPO in err
    assert weights_in_cache(hf_home) == []
    assert not [p for p in cached_blobs(hf_home) if p.stat().st_size >= len(tiny_files[0]["model.safetensors"]) // 2]
    assert not [p for p in (hf_home / "hub").rglob("*.incomplete")]
    # Offline, the partial snapshot is not taken for the model.
    one_line_error(lesion(url, hf_home, "sites", "--model", REPO, "--revision", commit, offline=True))
    fake.fault = None
    done = lesion(url, hf_home, "sites", "--model", REPO, "--revision", commit)
    assert done.returncode == 0, done.stderr
    assert [p.name for p in weights_in_cache(hf_home)] == ["model.safetensors"]


@pytest.mark.slow
def test_a_download_killed_midway_is_never_taken_for_the_file(hub, tiny_files, tmp_path):
    fake, url = hub
    commit = fake.add(REPO, tiny_files[0])
    hf_home = tmp_path / "hf"
    fake.fault = "stall"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "TRANSFORMERS_OFFLINE"))}
    env.update(HF_ENDPOINT=url, HF_HOME=str(hf_home), LESION_NO_PROGRESS="1")
    proc = subprocess.Popen([sys.executable, "-m", "lesion", "sites", "--model", REPO, "--revision", commit,
                             "--quiet"], env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        assert fake.stalled.wait(timeout=240), "the download never started"
    finally:
        proc.kill()  # SIGKILL: no handler, no cleanup
        proc.wait(timeout=60)
    assert weights_in_cache(hf_home) == []
    fake.fault = None
    one_line_error(lesion(url, hf_home, "sites", "--model", REPO, "--revision", commit, offline=True))
    done = lesion(url, hf_home, "sites", "--model", REPO, "--revision", commit)
    assert done.returncode == 0, done.stderr
    [weights] = weights_in_cache(hf_home)
    assert weights.read_bytes() == tiny_files[0]["model.safetensors"]


@pytest.mark.slow
def test_pickled_weights_are_refused_before_they_download(hub, tiny_files, tmp_path):
    fake, url = hub
    files = {n: b for n, b in tiny_files[0].items() if n != "model.safetensors"}
    fake.add(REPO, {**files, "pytorch_model.bin": b"\x80\x04pickle that would run code"})
    hf_home = tmp_path / "hf"
    err = one_line_error(lesion(url, hf_home, "sites", "--model", REPO))
    assert "pytorch_model.bin" in err
    assert not fake.requested("pytorch_model.bin")
    assert cached_blobs(hf_home) == []


@pytest.mark.slow
def test_code_in_a_hub_repository_is_never_downloaded_nor_run(hub, tiny_files, tmp_path):
    fake, url = hub
    marker = tmp_path / "ran"
    config = json.loads(tiny_files[0]["config.json"])
    config.update(model_type="evil_llama", auto_map={"AutoModelForCausalLM": "evil.EvilModel",
                                                     "AutoConfig": "evil.EvilConfig"})
    fake.add(REPO, {**tiny_files[0], "config.json": json.dumps(config).encode(),
                    "evil.py": f"open({str(marker)!r}, 'w').close()\n".encode()})
    err = one_line_error(lesion(url, tmp_path / "hf", "sites", "--model", REPO))
    assert "auto_map" in err
    assert not fake.requested("evil.py") and not marker.exists()


@pytest.mark.slow
def test_unknown_repositories_and_revisions_are_one_line(hub, tiny_files, tmp_path):
    fake, url = hub
    fake.add(REPO, tiny_files[0])
    hf_home = tmp_path / "hf"
    assert "--revision" in one_line_error(lesion(url, hf_home, "sites", "--model", REPO, "--revision", "nope"))
    one_line_error(lesion(url, hf_home, "sites", "--model", "tiny-org/missing"))
    # Offline with nothing cached.
    one_line_error(lesion(url, hf_home, "sites", "--model", REPO, offline=True))
    assert cached_blobs(hf_home) == []


@pytest.mark.slow
def test_a_private_repository_needs_hf_token(hub, tiny_files, tmp_path):
    fake, url = hub
    fake.add(REPO, tiny_files[0])
    fake.private.add(REPO)
    hf_home = tmp_path / "hf"
    assert "HF_TOKEN" in one_line_error(lesion(url, hf_home, "sites", "--model", REPO))
    done = lesion(url, hf_home, "sites", "--model", REPO, token=TOKEN)
    assert done.returncode == 0, done.stderr


def test_revision_is_for_hub_ids_only(tiny_dir, capsys):
    from lesion.cli import main
    assert main(["sites", "--model", tiny_dir, "--revision", "main", "--quiet"]) == 2
    assert "--revision" in capsys.readouterr().err
    # An analysis that loads the model by name (once per dtype) would drop it: refused rather than ignored.
    assert main(["analyze", "precision", "--model", REPO, "--revision", "main", "--quiet"]) == 2
    assert "--revision" in capsys.readouterr().err


def test_a_result_from_another_commit_is_refused_by_the_library(study):
    from dataclasses import replace

    from lesion.errors import ParameterError
    from lesion.method.study import check_same_model
    settings = study.settings().merged(model_revision="a" * 40)
    check_same_model(settings, replace(study.lm, revision="a" * 40), "ranking")
    with pytest.raises(ParameterError) as refused:
        check_same_model(settings, replace(study.lm, revision="b" * 40), "ranking")
    assert refused.value.parameter == "revision"


def test_the_files_lesion_downloads():
    from lesion.errors import LesionError
    from lesion.model.hub import wanted_files
    names = ["config.json", "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors",
             "model.safetensors.index.json", "pytorch_model.bin", "modeling_x.py", "tokenizer.json", "README.md",
             "onnx/model.safetensors", "tokenizer.model"]
    assert wanted_files("o/r", "c" * 40, names) == sorted(
        ["config.json", "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors",
         "model.safetensors.index.json", "tokenizer.json", "tokenizer.model"])
    with pytest.raises(LesionError):
        wanted_files("o/r", "c" * 40, ["config.json", "pytorch_model.bin"])
    with pytest.raises(LesionError):
        wanted_files("o/r", "c" * 40, ["model.safetensors"])  # no config
