"""A hub id's files, downloaded as transformers does on first use, safetensors only, no code.

huggingface_hub does the transfer: it reads ``HF_ENDPOINT``, ``HF_HOME`` (or ``HF_HUB_CACHE``),
``HF_TOKEN`` and ``HF_HUB_OFFLINE``, and writes each file to a temporary name that is renamed into
its cache only once its size is the one the hub announced, so an interrupted or short download
leaves nothing a later run would take for the file. lesion asks it for the few top-level files a
causal LM needs (config, safetensors weights, tokenizer): never a pickle (``.bin``, ``.pt``), never
a ``.py`` file, so nothing shipped in a repository can run. The folder returned is the snapshot of
one commit, whose hash is the model's revision in every result lesion writes.
"""
from __future__ import annotations

import contextlib
import fnmatch
import json
import re
from pathlib import Path

from ..errors import ModelError, ParameterError

# The top-level files lesion reads from a repository; everything else (code, pickles, other
# formats, subfolders) is never downloaded.
WANTED = ("config.json", "generation_config.json", "*.safetensors", "*.safetensors.index.json",
          "tokenizer.json", "tokenizer_config.json", "tokenizer.model", "special_tokens_map.json",
          "added_tokens.json", "vocab.json", "vocab.txt", "merges.txt", "spiece.model", "*.tiktoken",
          "chat_template.jinja", "chat_template.json")
PICKLED = ("*.bin", "*.pt", "*.pth", "*.ckpt", "*.pkl", "*.pickle")
COMMIT_HEX = 40
COMMIT = re.compile(r"[0-9a-f]{40}")
# git's ref-name rules (git check-ref-format), the part that keeps a name a name: no "..", no
# component starting with "." or ending with ".lock", no leading or trailing "/", no "//", no
# backslash, space, control character or any of ~^:?*[ and no "@{". The hub client joins a
# revision into cache paths (refs/<revision>), so anything else could name a file outside it.
_REF_FORBIDDEN = re.compile(r"[\x00-\x20\x7f~^:?*\[\\]|\.\.|@\{|//|^/|/$|^\.|/\.|\.lock$|\.lock/|\.$|^@$")


def is_commit(text: object) -> bool:
    """Whether ``text`` is a full commit hash (40 lower-case hex digits), the only form a hub's answer
    or a result's recorded revision may take."""
    return isinstance(text, str) and COMMIT.fullmatch(text) is not None


def check_revision(revision: object) -> None:
    """Refuse a revision that is neither a commit hash nor a git branch or tag name, before the hub
    client sees it (it would join ``../x`` into a path and write the commit hash there)."""
    if revision is None or is_commit(revision):
        return
    if not isinstance(revision, str) or not revision or len(revision) > 255 or _REF_FORBIDDEN.search(revision):
        raise ParameterError("revision", f"must be a branch or tag name (git's ref-name rules: no '..', no leading "
                             f"'/', no backslash, space or control character) or a 40-hex commit (got {revision!r})")


def snapshot(repo_id: str, revision: str | None = None, progress: bool = True) -> tuple[Path, str]:
    """(the local folder holding ``repo_id``'s files at ``revision``, its commit hash), downloading
    what the cache lacks; with ``HF_HUB_OFFLINE`` set or the hub unreachable, what the cache holds."""
    check_revision(revision)
    with _quiet_hub(progress):
        return _snapshot(repo_id, revision)


@contextlib.contextmanager
def _quiet_hub(progress: bool):
    """huggingface_hub's warnings (each retry of a broken transfer) off, since a failure ends in one
    line; its progress bars only where lesion shows progress. Both restored after."""
    from huggingface_hub import utils as hub_utils
    from huggingface_hub.utils import logging as hub_logging

    verbosity, bars_off = hub_logging.get_verbosity(), hub_utils.are_progress_bars_disabled()
    hub_logging.set_verbosity_error()
    if not progress:
        hub_utils.disable_progress_bars()
    try:
        yield
    finally:
        hub_logging.set_verbosity(verbosity)
        if not bars_off:
            hub_utils.enable_progress_bars()


def _snapshot(repo_id: str, revision: str | None) -> tuple[Path, str]:
    from huggingface_hub import HfApi
    from huggingface_hub import errors as hub_errors

    unreachable, transfer = _network_errors()
    offline: tuple[type[Exception], ...] = (hub_errors.OfflineModeIsEnabled, *unreachable)
    failed: tuple[type[Exception], ...] = (OSError, *transfer)
    cannot = f"cannot load model {repo_id!r}"
    try:
        try:
            info = HfApi().model_info(repo_id, revision=revision)
        except offline as e:
            return _cached(repo_id, revision, e)
        if not info.sha or info.siblings is None:
            raise ModelError(f"{cannot}: the hub at {_endpoint()} did not say which commit and files it has: "
                             "check HF_ENDPOINT")
        if not is_commit(info.sha):  # the hub client would make it a folder name in its cache
            raise ModelError(f"{cannot}: the hub at {_endpoint()} answered {info.sha[:60]!r}, not a 40-hex "
                             "commit: check HF_ENDPOINT")
        files = wanted_files(repo_id, info.sha, [s.rfilename for s in info.siblings])
        folder = Path(_download(repo_id, revision, files))
    except hub_errors.HFValidationError:
        raise ModelError(f"{cannot}: not a folder, a .gguf file, an alias or a valid hub id (owner/name): "
                         "pass one of those") from None
    except hub_errors.RevisionNotFoundError:
        raise ParameterError("revision", f"{revision!r} is not a branch, tag or commit of {repo_id!r}: pass one "
                             "that exists") from None
    except hub_errors.GatedRepoError:
        raise ModelError(f"{cannot}: it is gated: accept its terms on the hub and set HF_TOKEN to a token of "
                         "that account") from None
    except hub_errors.RepositoryNotFoundError:
        raise ModelError(f"{cannot}: no such repository at {_endpoint()} (or it is private and HF_TOKEN grants "
                         "no access): check the id, or set HF_TOKEN") from None
    except hub_errors.HfHubHTTPError as e:
        raise ModelError(f"{cannot}: the hub refused it ({_first_line(e)}): check HF_TOKEN and HF_ENDPOINT, "
                         "then run again") from None
    except failed as e:
        raise ModelError(f"{cannot}: its download failed ({_first_line(e)}); nothing incomplete was kept: "
                         "run again to download it") from None
    if folder.name != info.sha:  # the branch moved between the listing and the download
        raise ModelError(f"{cannot}: {revision or 'main'} changed on the hub while it downloaded (commit "
                         f"{info.sha[:12]}, then {folder.name[:12]}): run again")
    return folder, info.sha


def wanted_files(repo_id: str, commit: str, names: list[str]) -> list[str]:
    """The files lesion downloads from a repository holding ``names``; refused, before any
    download, when it has no config or its weights are not safetensors."""
    top = [n for n in names if "/" not in n]
    files = sorted(n for n in top if any(fnmatch.fnmatchcase(n, p) for p in WANTED))
    cannot = f"cannot load model {repo_id!r} at {commit[:12]}"
    if not any(n.endswith(".safetensors") for n in files):
        pickles = [n for n in top if any(fnmatch.fnmatchcase(n, p) for p in PICKLED)]
        if pickles:
            raise ModelError(f"{cannot}: it has only pickled weights ({pickles[0]}), which can run code when "
                             "loaded; lesion loads safetensors only: pass a revision or repository with "
                             "model.safetensors")
        raise ModelError(f"{cannot}: it has no safetensors weights: pass a repository with model.safetensors")
    if "config.json" not in files:
        raise ModelError(f"{cannot}: it has no config.json: pass the repository of a transformers model")
    return files


def check_no_code(folder: Path, name: str) -> None:
    """A config naming code to run (``auto_map``) is refused: lesion runs no code shipped with a model."""
    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return  # transformers' load says what is wrong with it
    refuse_remote_code(config, f"cannot load model {name!r}: its config.json")


def refuse_remote_code(config: object, where: str) -> None:
    """Refuse a config whose ``auto_map`` asks to run code shipped with the model (``{"AutoModelForCausalLM":
    "modeling_x.XModel"}`` names ``modeling_x.py``): lesion never runs a model's own code, and reading such a
    config through transformers would stop to ask on an open stdin."""
    if not isinstance(config, dict) or "auto_map" not in config:
        return
    auto_map = config["auto_map"]  # foreign JSON
    names = auto_map.values() if isinstance(auto_map, dict) else [auto_map]
    references = [r for n in names for r in (n if isinstance(n, list) else [n]) if isinstance(r, str)]
    # "module.Class" is module.py beside the config; "repo--module.Class" is module.py of another repository
    files = sorted({r.rsplit(".", 1)[0].replace("--", ": ") + ".py" for r in references}) or ["(unnamed)"]
    raise ModelError(f"{where} names code shipped with the model in its auto_map ({', '.join(files)}): lesion "
                     "never runs a model's own code; use a model whose type transformers ships")


def _download(repo_id: str, revision: str | None, files: list[str]) -> str:
    """The snapshot folder (named by its commit) of ``files`` at ``revision``; a branch or tag is
    resolved again and kept in the cache's refs, so that it resolves offline later."""
    from huggingface_hub import snapshot_download
    return snapshot_download(repo_id, revision=revision, allow_patterns=files)


def _cached(repo_id: str, revision: str | None, cause: Exception) -> tuple[Path, str]:
    """The cached snapshot of ``repo_id`` at ``revision``, refused when incomplete (as far as the
    cached listing of the repository tells) or absent."""
    import huggingface_hub
    from huggingface_hub import snapshot_download

    if isinstance(cause, huggingface_hub.errors.OfflineModeIsEnabled):
        why, fix = "HF_HUB_OFFLINE is set", "unset HF_HUB_OFFLINE to download it"
    else:
        why, fix = f"the hub at {_endpoint()} cannot be reached ({_first_line(cause)})", \
            "connect (or check HF_ENDPOINT) and run again to download it"
    files = ["config.json"]
    listing = getattr(huggingface_hub, "get_cached_repo_tree", None)  # huggingface_hub >= 1.x
    no_listing = getattr(huggingface_hub.errors, "CachedRepoTreeNotFoundError", OSError)
    try:
        if listing is not None:
            files = wanted_files(repo_id, revision or "main", [f.path for f in listing(repo_id, revision=revision)])
    except (no_listing, OSError, ValueError):
        pass  # no listing cached (another tool downloaded it): the load checks the files it needs
    at = f" at {revision!r}" if revision else ""
    try:
        folder = Path(snapshot_download(repo_id, revision=revision, allow_patterns=files, local_files_only=True))
    except (OSError, ValueError) as e:
        partly = "only partly" if "incomplete" in f"{type(e).__name__} {str(e)[:200]}".lower() else "not"
        raise ModelError(f"cannot load model {repo_id!r}{at}: {why}, and it is {partly} in the hub cache "
                         f"({_hub_cache()}): {fix}") from None
    if not is_commit(folder.name):
        raise ModelError(f"cannot load model {repo_id!r}{at}: the cached snapshot {folder} is not named by a "
                         "commit: download it again")
    return folder, folder.name


def _network_errors() -> tuple[tuple[type[Exception], ...], tuple[type[Exception], ...]]:
    """(no connection or no answer, any failed transfer) of the HTTP client huggingface_hub uses
    (httpx2 from version 2, httpx before); a client's other errors are OSErrors."""
    import importlib
    for name in ("httpx2", "httpx"):
        try:
            client = importlib.import_module(name)
        except ImportError:
            continue
        return (client.ConnectError, client.TimeoutException), (client.HTTPError,)
    return (), ()


def _endpoint() -> str:
    from huggingface_hub import constants
    return constants.ENDPOINT


def _hub_cache() -> str:
    from huggingface_hub import constants
    return str(constants.HF_HUB_CACHE)


def _first_line(e: Exception) -> str:
    text = str(e).strip()
    return (text.splitlines()[0] if text else type(e).__name__)[:200]
