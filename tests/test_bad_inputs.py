"""Bad input, across every subcommand: exit 2, one line `lesion: error: ...`, no traceback, nothing written.

Each case is a command line with placeholders filled from a tiny model, a scan of it, and
malformed files, and what refuses it: a parameter name (a ParameterError on that parameter,
whose line starts with its flag) or a class of the error tree (argparse's own refusals are
plain LesionErrors). The whole temp folder (the run folder included) is listed before and
after each case: any file that appears is a failure.
"""
import json
import os
import re
import shutil
import stat

import pytest

import lesion.cli
from lesion.cli import flag, main
from lesion.errors import LesionError, ModelMismatch, ParameterError, ResultError
from conftest import TEXT, save_tiny, scan_tiny


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    root = tmp_path_factory.mktemp("bad")
    tiny = str(save_tiny(root / "tiny"))
    run = root / "run"
    scan_tiny(tiny, run)
    ranking = json.loads((run / "ranking.json").read_text())
    files = root / "files"
    files.mkdir()

    def write(name, content):
        path = files / name
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
        return str(path)

    short_context = root / "short-context"
    save_tiny(short_context)
    config = json.loads((short_context / "config.json").read_text())
    (short_context / "config.json").write_text(json.dumps({**config, "max_position_embeddings": 32}))
    bad_report = root / "bad-report"
    shutil.copytree(run, bad_report)
    (bad_report / "compare.json").write_text('{"rows": [')
    edited_run = root / "edited-run"
    shutil.copytree(run, edited_run)
    (edited_run / "critical.json").write_text(json.dumps({**json.loads((run / "critical.json").read_text()),
                                                          "n": 5}))
    incomplete = root / "incomplete-report"
    shutil.copytree(run, incomplete)
    (incomplete / "compare.json").write_text('{"levels": [1]}')
    device = files / "device-node"
    try:
        os.mknod(device, stat.S_IFCHR | 0o666, os.makedev(1, 3))  # a /dev/null of our own
    except (PermissionError, AttributeError):
        os.mkfifo(device)  # not root: a FIFO is a node that is not a regular file too
    os.mkfifo(files / "fifo")
    with open(tiny + "/model.safetensors", "rb") as f:
        head = f.read(20)
    gguf = write("cut.gguf", b"GGUF\x03\x00\x00\x00" + head[:6])
    critical = json.loads((run / "critical.json").read_text())
    best = max(critical["trajectory"], key=lambda step: step["delta"])  # what a search that never crossed records
    random_weights = root / "random-weights"
    shutil.copytree(tiny, random_weights)
    (random_weights / "model.safetensors").write_bytes(os.urandom(4096))
    mismatch = root / "mismatch"
    shutil.copytree(tiny, mismatch)
    config = json.loads((mismatch / "config.json").read_text())
    (mismatch / "config.json").write_text(json.dumps({**config, "intermediate_size": 96}))
    (root / "dangling-folder").symlink_to(root / "nowhere" / "deeper")
    (root / "dangling-file.json").symlink_to(root / "nowhere" / "x.json")
    return {
        "TINY": tiny, "RUN": str(run), "SHORT": str(short_context), "ROOT": str(root),
        "BADREPORT": str(bad_report), "EDITEDRUN": str(edited_run), "INCOMPLETE": str(incomplete),
        "OUT": str(root / "out.json"), "OUTDIR": str(root / "outdir"),
        "FOLDER": str(files), "FIFO": str(files / "fifo"), "DEVICE": str(device), "GGUF": gguf,
        "CORRUPT": write("corrupt.json", '{"model": "x", "neurons": ['),
        "LIST": write("list.json", "[1, 2, 3]"),
        "NULLSETTINGS": write("null-settings.json", json.dumps({**ranking, "settings": None})),
        "STRSCORES": write("str-scores.json", json.dumps({**ranking, "scores": ["high"] * len(ranking["scores"])})),
        "SHORTSCORES": write("short-scores.json", json.dumps({**ranking, "scores": ranking["scores"][:3]})),
        "NOFP": write("no-fingerprint.json", json.dumps({**ranking, "settings": {
            k: v for k, v in ranking["settings"].items() if k != "model_fingerprint"}})),
        "EDITEDTEXT": write("edited-text.json", json.dumps({**ranking, "settings": {
            **ranking["settings"], "text": TEXT.replace("fox", "cat")}})),
        "NOTEXT": write("no-text.json", json.dumps({**ranking, "settings": {**ranking["settings"], "text": None}})),
        "TEXTFILE": write("ranking-with-missing-text.json", json.dumps({**ranking, "settings": {
            **ranking["settings"], "text": None, "text_file": "text-0123456789abcdef.txt"}})),
        "ESCAPE": write("ranking-escaping-text.json", json.dumps({**ranking, "settings": {
            **ranking["settings"], "text": None, "text_file": "../../etc/passwd"}})),
        "BADNEURON": write("bad-neuron.json", json.dumps({**ranking, "neurons": ["model.layers.0.mlp.down_proj:²"]
                                                          + ranking["neurons"][1:]})),
        "LATIN1": write("latin1.txt",
                        "Café au lait, déjà vu, naïve façade: caractères accentués ici.".encode("latin-1")),
        "EMPTY": write("empty.txt", "  \n"),
        "EMPTYCRIT": write("empty-critical.json", json.dumps({**critical, "neurons": [], "n": 0, "reached": False,
                                                              "delta": best["delta"], "masked_ppl": best["ppl"]})),
        "EDITEDN": write("edited-n.json", json.dumps({**critical, "n": 5})),
        "EDITEDDELTA": write("edited-delta.json", json.dumps({**critical, "delta": 99})),
        "NEGPPL": write("negative-ppl.json", json.dumps({**critical, "baseline_ppl": -5})),
        "FARPOS": write("far-position.json", json.dumps({**ranking,
                                                         "positions": [10 ** 12] + ranking["positions"][1:]})),
        "HUGESCORE": write("unordered.json", json.dumps({**ranking, "scores": ranking["scores"][:-1] + [4.3e9]})),
        "RANDOMST": str(random_weights), "MISMATCH": str(mismatch),
        "DANGLING": str(root / "dangling-folder"), "DANGLINGFILE": str(root / "dangling-file.json"),
        "OTHERTEXT": "A different sentence that is long enough to be a text for the method here.",
    }


SITE = "model.layers.0.mlp.down_proj"
CASES = [
    # scan: numbers
    ("scan-alpha-nan", "scan --alpha nan", "alpha"),
    ("scan-alpha-inf", "scan --alpha inf", "alpha"),
    ("scan-alpha-negative", "scan --alpha -1", "alpha"),
    ("scan-samples-0", "scan --samples 0", "samples"),
    ("scan-samples-huge", "scan --samples 100000000", "samples"),
    ("scan-samples-word", "scan --samples many", "samples"),
    ("scan-seed-negative", "scan --seed -1", "seed"),
    ("scan-seed-overflow", "scan --seed 18446744073709551616", "seed"),
    ("scan-epsilon-nan", "scan --epsilon nan", "epsilon"),
    ("scan-epsilon-0", "scan --epsilon 0", "epsilon"),
    ("scan-step-0", "scan --step 0", "step"),
    ("scan-step-beyond-candidates", "scan --step 50 --max-neurons 10", "step"),
    ("scan-max-neurons-0", "scan --max-neurons 0", "max_neurons"),
    ("scan-batch-size-0", "scan --batch-size 0", "batch_size"),
    ("scan-keep-0", "scan --keep 0", "keep"),
    # scan: names
    ("scan-device-foo", "scan --device foo", "device"),
    ("scan-device-meta", "scan --device meta", "device"),
    ("scan-device-map-odd", "scan --device-map everywhere", "device_map"),
    ("scan-dtype", "scan --dtype float8", "dtype"),
    ("scan-ranker-typo", "scan --ranker noyse", LesionError),
    ("scan-reduce", "scan --reduce median", LesionError),
    ("scan-components", "scan --components down,bogus", "components"),
    ("scan-unknown-flag", "scan --alpah 5", LesionError),
    # scan: texts
    ("scan-text-short", "scan --text 'too short'", "text"),
    ("scan-text-file-missing", "scan --text-file {ROOT}/nope.txt", "text_file"),
    ("scan-text-file-folder", "scan --text-file {FOLDER}", "text_file"),
    ("scan-text-file-latin1", "scan --text-file {LATIN1}", "text_file"),
    ("scan-text-file-empty", "scan --text-file {EMPTY}", "text_file"),
    ("scan-text-and-file", "scan --text-file {LATIN1} --text 'a b c d e f g h i j k l'", "text_file"),
    ("scan-text-beyond-context", "scan --model {SHORT} --text '" + TEXT + "'", "text"),
    # scan: models and outputs
    ("scan-gguf-missing", "scan --model {ROOT}/missing.gguf", "model"),
    ("scan-gguf-cut-short", "scan --model {GGUF}", "model"),
    ("scan-model-empty-folder", "scan --model {FOLDER}", "model"),
    ("scan-out-is-a-file", "scan --out {LATIN1}", "out"),
    ("scan-max-samples-without-auto", "scan --samples 4 --max-samples 2", "max_samples"),
    ("scan-weights-random-bytes", "scan --model {RANDOMST}", "model"),
    ("scan-config-disagrees-with-weights", "scan --model {MISMATCH}", "model"),
    ("scan-out-dangling-link", "scan --out {DANGLING}", "out"),
    ("scan-out-under-a-file", "scan --out {LATIN1}/run", "out"),
    # rank
    ("rank-out-folder", "rank --out {FOLDER}", "out"),
    ("rank-out-fifo", "rank --out {FIFO}", "out"),
    ("rank-out-device", "rank --out {DEVICE}", "out"),
    ("rank-out-unwritable", "rank --out /proc/lesion-test/ranking.json", "out"),
    ("rank-keep-negative", "rank --keep -5", "keep"),
    ("rank-alpha-nan", "rank --alpha nan", "alpha"),
    ("rank-out-dangling-link", "rank --out {DANGLINGFILE}", "out"),
    # identify
    ("identify-ranking-missing", "identify --ranking {ROOT}/none.json", ResultError),
    ("identify-ranking-corrupt", "identify --ranking {CORRUPT}", ResultError),
    ("identify-ranking-list", "identify --ranking {LIST}", ResultError),
    ("identify-ranking-folder", "identify --ranking {FOLDER}", ResultError),
    ("identify-settings-null", "identify --ranking {NULLSETTINGS}", ResultError),
    ("identify-scores-strings", "identify --ranking {STRSCORES}", ResultError),
    ("identify-scores-short", "identify --ranking {SHORTSCORES}", ResultError),
    ("identify-neuron-superscript", "identify --ranking {BADNEURON}", LesionError),
    ("identify-no-fingerprint", "identify --ranking {NOFP}", ModelMismatch),
    ("identify-edited-text", "identify --ranking {EDITEDTEXT}", ResultError),
    ("identify-text-left-out", "identify --ranking {NOTEXT}", ResultError),
    ("identify-text-file-missing", "identify --ranking {TEXTFILE}", ResultError),
    ("identify-text-file-escapes", "identify --ranking {ESCAPE}", ResultError),
    ("identify-other-text", "identify --ranking {RUN}/ranking.json --text '{OTHERTEXT}'", "text"),
    ("identify-step-beyond-ranking", "identify --ranking {RUN}/ranking.json --step 900 --max-neurons 1000", "step"),
    ("identify-epsilon-negative", "identify --ranking {RUN}/ranking.json --epsilon -1", "epsilon"),
    ("identify-out-folder", "identify --ranking {RUN}/ranking.json --out {FOLDER}", "out"),
    ("identify-position-outside-text", "identify --ranking {FARPOS}", ResultError),
    ("identify-scores-out-of-order", "identify --ranking {HUGESCORE}", ResultError),
    # mask
    ("mask-channel-superscript", f"mask {SITE}:²", LesionError),
    ("mask-channel-negative", f"mask {SITE}:-1", LesionError),
    ("mask-no-channel", f"mask {SITE}", LesionError),
    ("mask-second-channel", f"mask {SITE}:1:3", LesionError),
    ("mask-same-neuron-twice", f"mask {SITE}:1 {SITE}:1", "neurons"),
    ("scan-alpha-overflowing", "scan --alpha 1e308", "alpha"),
    ("plan-ranks-without-gpus", "plan --ranks 1000", "ranks"),
    ("mask-nothing", "mask", "neurons"),
    ("mask-not-a-site", "mask model.layers.9.mlp.down_proj:1", LesionError),
    ("mask-channel-out-of-range", f"mask {SITE}:99999", LesionError),
    ("mask-neurons-corrupt", "mask --neurons {CORRUPT}", ResultError),
    ("mask-neurons-empty-set", "mask --neurons {EMPTYCRIT}", ResultError),
    ("mask-edited-n", "mask --neurons {EDITEDN}", ResultError),
    ("mask-edited-delta", "mask --neurons {EDITEDDELTA}", ResultError),
    ("mask-negative-ppl", "mask --neurons {NEGPPL}", ResultError),
    # generate
    ("generate-max-new-tokens-negative", "generate --neurons {RUN}/critical.json --prompt Hi --max-new-tokens -1",
     "max_new_tokens"),
    ("generate-max-new-tokens-0", "generate --neurons {RUN}/critical.json --prompt Hi --max-new-tokens 0",
     "max_new_tokens"),
    ("generate-empty-prompt", "generate --neurons {RUN}/critical.json --prompt ''", "prompt"),
    ("generate-neurons-missing", "generate --neurons {ROOT}/none.json --prompt Hi", ResultError),
    ("generate-past-context", "generate --model {SHORT} --neurons {RUN}/critical.json --prompt Hi", "max_new_tokens"),
    # eval
    ("eval-batch-size-0", "eval --neurons {RUN}/critical.json --batch-size 0 --out {OUT}", "batch_size"),
    ("eval-window-1", "eval --neurons {RUN}/critical.json --window 1 --out {OUT}", "window"),
    ("eval-levels", "eval --neurons {RUN}/critical.json --levels 0,x --out {OUT}", "levels"),
    ("eval-nothing", "eval --neurons {RUN}/critical.json --corpus none --out {OUT}", "corpora"),
    ("eval-out-folder", "eval --neurons {RUN}/critical.json --out {FOLDER}", "out"),
    ("eval-window-past-context", "eval --neurons {RUN}/critical.json --window 100000 --stride 512 --out {OUT}",
     "window"),
    ("eval-corpus-past-short-context", "eval --model {SHORT} --neurons {RUN}/critical.json --out {OUT}", "window"),
    # minimal
    ("minimal-run-missing", "minimal --run {ROOT}/none", ResultError),
    ("minimal-run-is-file", "minimal --run {LATIN1}", ResultError),
    ("minimal-pool-0", "minimal --run {RUN} --pool 0", "pool"),
    ("minimal-pool-31", "minimal --run {RUN} --pool 31", "pool"),
    ("minimal-max-size", "minimal --run {RUN} --pool 4 --max-size 9", "max_size"),
    ("minimal-epsilon-nan", "minimal --run {RUN} --epsilon nan", "epsilon"),
    # mechanism
    ("mechanism-run-missing", "mechanism --run {ROOT}/none", ResultError),
    ("mechanism-seed-negative", "mechanism --run {RUN} --seed -1", "seed"),
    # verify
    ("verify-against-missing", "verify --against {ROOT}/none/critical.json", ResultError),
    ("verify-against-corrupt", "verify --against {CORRUPT}", ResultError),
    ("verify-fingerprints-corrupt", "verify --against {RUN}/critical.json --fingerprints {CORRUPT}", ResultError),
    ("verify-edited-n", "verify --against {EDITEDN}", ResultError),
    ("verify-edited-delta", "verify --against {EDITEDDELTA}", ResultError),
    ("verify-negative-ppl", "verify --against {NEGPPL}", ResultError),
    # search
    ("search-texts-empty", "search --texts '' --out {OUT}", "texts"),
    ("search-passages-0", "search --passages 0 --out {OUT}", "passages"),
    ("search-passages-huge", "search --passages 1000000000 --out {OUT}", "passages"),
    ("search-same-text-twice", f"search --text '{TEXT}' --text '{TEXT}' --out {{OUT}}", "texts"),
    # analyze
    ("analyze-unknown", "analyze bogus", LesionError),
    ("analyze-typo", "analyze phse --out-dir {RUN}", LesionError),
    ("analyze-alphas-nan", "analyze sweep --alphas 1,nan", "alphas"),
    ("analyze-dtypes", "analyze precision --dtypes float32,float8", "dtypes"),
    ("analyze-phase-no-run", "analyze phase --out-dir {ROOT}/none", ResultError),
    ("analyze-levels-0", "analyze components --levels 0", "levels"),
    ("analyze-max-n-0", "analyze phase --out-dir {RUN} --max-n 0", "max_n"),
    # compare
    ("compare-ranker-typo", "compare --rankers noise,gradiant", "rankers"),
    ("compare-levels-0", "compare --levels 0,10", "levels"),
    ("compare-random-runs-0", "compare --random-runs 0", "random_runs"),
    ("compare-alpha-nan", "compare --alpha nan", "alpha"),
    # report
    ("report-missing", "report {ROOT}/none", ResultError),
    ("report-corrupt-json", "report {BADREPORT}", ResultError),
    ("report-incomplete-json", "report {INCOMPLETE}", ResultError),
    ("report-edited-critical", "report {EDITEDRUN}", ResultError),
    # sites and the command itself
    ("sites-components", "sites --components bogus", "components"),
    ("sites-device", "sites --device foo", "device"),
    ("unknown-command", "scna", LesionError),
]
MODEL_COMMANDS = {"scan", "rank", "identify", "mask", "generate", "eval", "minimal", "mechanism", "verify",
                  "analyze", "compare", "sites", "search"}


def files_under(*folders) -> set:
    return {os.path.join(d, f) for folder in folders for d, _, names in os.walk(folder) for f in names} | \
        {d for folder in folders for d, _, _ in os.walk(folder)}


def test_the_matrix_is_broad():
    assert len(CASES) >= 60
    assert {c[1].split()[0] for c in CASES} >= MODEL_COMMANDS | {"report"}
    assert len({c[0] for c in CASES}) == len(CASES)


@pytest.mark.parametrize("name, command, refused_by", CASES, ids=[c[0] for c in CASES])
def test_bad_input(inputs, capsys, monkeypatch, name, command, refused_by):
    import shlex
    argv = [a.format(**inputs) for a in shlex.split(command)]
    if argv[0] in MODEL_COMMANDS and "--model" not in argv and not argv[0].startswith("verify"):
        argv[1:1] = ["--model", inputs["TINY"]]
    if argv[0] in ("scan", "rank", "compare", "sites", "analyze") and "--text" not in argv \
            and "--text-file" not in argv and argv[0] != "sites":
        argv += ["--text", TEXT]
    if argv[0] == "scan" and "--out" not in argv:
        argv += ["--out", inputs["OUTDIR"]]
    if argv[0] in ("rank", "identify") and "--out" not in argv:
        argv += ["--out", inputs["OUT"]]
    if argv[0] == "compare":
        argv += ["--out-dir", inputs["OUTDIR"]]
    if argv[0] == "analyze" and "--out-dir" not in argv:
        argv += ["--out-dir", inputs["OUTDIR"]]
    shown = lesion.cli.error_line
    refusals: list = []
    monkeypatch.setattr(lesion.cli, "error_line", lambda error: refusals.append(error) or shown(error))
    before = files_under(inputs["ROOT"])
    device_before = os.stat(inputs["DEVICE"])
    code = main(argv + ["--quiet"] if argv[0] not in ("scna",) else argv)
    err = capsys.readouterr().err
    assert code == 2, (argv, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("lesion: error: "), err
    assert len(refusals) == 1, refusals
    error = refusals[0]
    if isinstance(refused_by, str):  # one parameter's bad value: named, and shown as its flag
        assert isinstance(error, ParameterError) and error.parameter == refused_by, (type(error), str(error))
        assert lines[0].startswith(f"lesion: error: {flag(refused_by)} "), lines[0]
        assert not re.search(r"`[a-z][a-z0-9_]*`", lines[0]), lines[0]  # every parameter named is shown as a flag
    else:
        assert type(error) is refused_by, (type(error), str(error))
    assert "Traceback" not in err
    assert files_under(inputs["ROOT"]) == before, sorted(files_under(inputs["ROOT"]) ^ before)
    device_after = os.stat(inputs["DEVICE"])
    assert (device_after.st_mode, device_after.st_rdev, device_after.st_ino) == \
        (device_before.st_mode, device_before.st_rdev, device_before.st_ino)
