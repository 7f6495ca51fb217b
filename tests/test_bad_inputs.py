"""Bad input, across every subcommand: exit 2, one line `lesion: error: ...`, no traceback, nothing written.

Each case is a command line with placeholders filled from a tiny model, a scan of it, and
malformed files. The whole temp folder (the run folder included) is listed before and
after each case: any file that appears is a failure.
"""
import json
import os
import shutil
import stat

import pytest

from lesion.cli import main
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
    ("scan-alpha-nan", "scan --alpha nan", "--alpha must be > 0 and finite"),
    ("scan-alpha-inf", "scan --alpha inf", "--alpha must be > 0 and finite"),
    ("scan-alpha-negative", "scan --alpha -1", "--alpha must be > 0"),
    ("scan-samples-0", "scan --samples 0", "--samples must be >= 1"),
    ("scan-samples-huge", "scan --samples 100000000", "<= 100000"),
    ("scan-samples-word", "scan --samples many", "--samples must be a number or 'auto'"),
    ("scan-seed-negative", "scan --seed -1", "--seed must be"),
    ("scan-seed-overflow", "scan --seed 18446744073709551616", "--seed must be"),
    ("scan-epsilon-nan", "scan --epsilon nan", "--epsilon must be > 0 and finite"),
    ("scan-epsilon-0", "scan --epsilon 0", "--epsilon must be > 0"),
    ("scan-step-0", "scan --step 0", "--step must be >= 1"),
    ("scan-step-beyond-candidates", "scan --step 50 --max-neurons 10", "larger than --max-neurons"),
    ("scan-max-neurons-0", "scan --max-neurons 0", "--max-neurons must be >= 1"),
    ("scan-batch-size-0", "scan --batch-size 0", "--batch-size and --keep must be >= 1"),
    ("scan-keep-0", "scan --keep 0", "--batch-size and --keep must be >= 1"),
    # scan: names
    ("scan-device-foo", "scan --device foo", "--device 'foo' is not a device"),
    ("scan-device-meta", "scan --device meta", "lesion runs on cpu, cuda or mps"),
    ("scan-device-map-odd", "scan --device-map everywhere", "--device-map takes 'auto'"),
    ("scan-dtype", "scan --dtype float8", "unknown dtype"),
    ("scan-ranker-typo", "scan --ranker noyse", "did you mean 'noise'"),
    ("scan-reduce", "scan --reduce median", "invalid choice"),
    ("scan-components", "scan --components down,bogus", "unknown component"),
    ("scan-unknown-flag", "scan --alpah 5", "unrecognized arguments"),
    # scan: texts
    ("scan-text-short", "scan --text 'too short'", "more than 10"),
    ("scan-text-file-missing", "scan --text-file {ROOT}/nope.txt", "not found"),
    ("scan-text-file-folder", "scan --text-file {FOLDER}", "is a folder"),
    ("scan-text-file-latin1", "scan --text-file {LATIN1}", "not valid UTF-8"),
    ("scan-text-file-empty", "scan --text-file {EMPTY}", "is empty"),
    ("scan-text-and-file", "scan --text-file {LATIN1} --text 'a b c d e f g h i j k l'", "not both"),
    ("scan-text-beyond-context", "scan --model {SHORT} --text '" + TEXT + "'", "the model's context is 32"),
    # scan: models and outputs
    ("scan-gguf-missing", "scan --model {ROOT}/missing.gguf", "not found"),
    ("scan-gguf-cut-short", "scan --model {GGUF}", "cannot load model"),
    ("scan-model-empty-folder", "scan --model {FOLDER}", "cannot load model"),
    ("scan-out-is-a-file", "scan --out {LATIN1}", "is a file"),
    ("scan-max-samples-without-auto", "scan --samples 4 --max-samples 2", "--max-samples caps --samples auto only"),
    ("scan-weights-random-bytes", "scan --model {RANDOMST}", "not valid safetensors"),
    ("scan-config-disagrees-with-weights", "scan --model {MISMATCH}", "config.json disagrees with its weights"),
    ("scan-out-dangling-link", "scan --out {DANGLING}", "a symbolic link to nothing"),
    ("scan-out-under-a-file", "scan --out {LATIN1}/run", "which is not a folder"),
    # rank
    ("rank-out-folder", "rank --out {FOLDER}", "is a folder"),
    ("rank-out-fifo", "rank --out {FIFO}", "not a regular file"),
    ("rank-out-device", "rank --out {DEVICE}", "not a regular file"),
    ("rank-out-unwritable", "rank --out /proc/lesion-test/ranking.json", "cannot write"),
    ("rank-keep-negative", "rank --keep -5", "--batch-size and --keep must be >= 1"),
    ("rank-alpha-nan", "rank --alpha nan", "--alpha must be > 0 and finite"),
    ("rank-out-dangling-link", "rank --out {DANGLINGFILE}", "whose folder does not exist"),
    # identify
    ("identify-ranking-missing", "identify --ranking {ROOT}/none.json", "not found"),
    ("identify-ranking-corrupt", "identify --ranking {CORRUPT}", "not valid JSON"),
    ("identify-ranking-list", "identify --ranking {LIST}", "not an object"),
    ("identify-ranking-folder", "identify --ranking {FOLDER}", "is a folder"),
    ("identify-settings-null", "identify --ranking {NULLSETTINGS}", "settings is not an object"),
    ("identify-scores-strings", "identify --ranking {STRSCORES}", "is not a number"),
    ("identify-scores-short", "identify --ranking {SHORTSCORES}", "differ in length"),
    ("identify-neuron-superscript", "identify --ranking {BADNEURON}", "bad neuron"),
    ("identify-no-fingerprint", "identify --ranking {NOFP}", "records no model_fingerprint"),
    ("identify-edited-text", "identify --ranking {EDITEDTEXT}", "does not match its recorded SHA-256"),
    ("identify-text-left-out", "identify --ranking {NOTEXT}", "records no text"),
    ("identify-text-file-missing", "identify --ranking {TEXTFILE}", "which is missing"),
    ("identify-text-file-escapes", "identify --ranking {ESCAPE}", "not a file name beside it"),
    ("identify-other-text", "identify --ranking {RUN}/ranking.json --text '{OTHERTEXT}'", "not the one"),
    ("identify-step-beyond-ranking", "identify --ranking {RUN}/ranking.json --step 900 --max-neurons 1000",
     "larger than the"),
    ("identify-epsilon-negative", "identify --ranking {RUN}/ranking.json --epsilon -1", "--epsilon must be > 0"),
    ("identify-out-folder", "identify --ranking {RUN}/ranking.json --out {FOLDER}", "is a folder"),
    ("identify-position-outside-text", "identify --ranking {FARPOS}", "positions holds 1000000000000, outside"),
    ("identify-scores-out-of-order", "identify --ranking {HUGESCORE}", "scores are not in decreasing order"),
    # mask
    ("mask-channel-superscript", f"mask {SITE}:²", "bad neuron"),
    ("mask-channel-negative", f"mask {SITE}:-1", "bad neuron"),
    ("mask-no-channel", f"mask {SITE}", "bad neuron"),
    ("mask-nothing", "mask", "no neurons to mask"),
    ("mask-not-a-site", "mask model.layers.9.mlp.down_proj:1", "not a neuron site"),
    ("mask-channel-out-of-range", f"mask {SITE}:99999", "channel out of range"),
    ("mask-neurons-corrupt", "mask --neurons {CORRUPT}", "not valid JSON"),
    ("mask-neurons-empty-set", "mask --neurons {EMPTYCRIT}", "has no neurons"),
    ("mask-edited-n", "mask --neurons {EDITEDN}", "n is 5 but neurons lists 1"),
    ("mask-edited-delta", "mask --neurons {EDITEDDELTA}", "delta is 99.0 but log10(masked_ppl / baseline_ppl)"),
    ("mask-negative-ppl", "mask --neurons {NEGPPL}", "baseline_ppl is -5"),
    # generate
    ("generate-max-new-tokens-negative", "generate --neurons {RUN}/critical.json --prompt Hi --max-new-tokens -1",
     "--max-new-tokens must be"),
    ("generate-max-new-tokens-0", "generate --neurons {RUN}/critical.json --prompt Hi --max-new-tokens 0",
     "--max-new-tokens must be"),
    ("generate-empty-prompt", "generate --neurons {RUN}/critical.json --prompt ''", "--prompt is empty"),
    ("generate-neurons-missing", "generate --neurons {ROOT}/none.json --prompt Hi", "not found"),
    ("generate-past-context", "generate --model {SHORT} --neurons {RUN}/critical.json --prompt Hi",
     "the model's context is 32"),
    # eval
    ("eval-batch-size-0", "eval --neurons {RUN}/critical.json --batch-size 0 --out {OUT}", "--batch-size >= 1"),
    ("eval-window-1", "eval --neurons {RUN}/critical.json --window 1 --out {OUT}", "--window >= 2"),
    ("eval-levels", "eval --neurons {RUN}/critical.json --levels 0,x --out {OUT}", "bad level"),
    ("eval-nothing", "eval --neurons {RUN}/critical.json --corpus none --out {OUT}", "nothing to evaluate"),
    ("eval-out-folder", "eval --neurons {RUN}/critical.json --out {FOLDER}", "is a folder"),
    ("eval-window-past-context", "eval --neurons {RUN}/critical.json --window 100000 --stride 512 --out {OUT}",
     "--window is 100000 tokens but the model's context is"),
    ("eval-corpus-past-short-context", "eval --model {SHORT} --neurons {RUN}/critical.json --out {OUT}",
     "the model's context is 32"),
    # minimal
    ("minimal-run-missing", "minimal --run {ROOT}/none", "has no ranking.json"),
    ("minimal-run-is-file", "minimal --run {LATIN1}", "is not a folder"),
    ("minimal-pool-0", "minimal --run {RUN} --pool 0", "--pool must be 1..30"),
    ("minimal-pool-31", "minimal --run {RUN} --pool 31", "--pool must be 1..30"),
    ("minimal-max-size", "minimal --run {RUN} --pool 4 --max-size 9", "--max-size must be 1..4"),
    ("minimal-epsilon-nan", "minimal --run {RUN} --epsilon nan", "--epsilon must be > 0 and finite"),
    # mechanism
    ("mechanism-run-missing", "mechanism --run {ROOT}/none", "has no critical.json"),
    ("mechanism-seed-negative", "mechanism --run {RUN} --seed -1", "--seed must be"),
    # verify
    ("verify-against-missing", "verify --against {ROOT}/none/critical.json", "not found"),
    ("verify-against-corrupt", "verify --against {CORRUPT}", "not valid JSON"),
    ("verify-fingerprints-corrupt", "verify --against {RUN}/critical.json --fingerprints {CORRUPT}",
     "not valid JSON"),
    ("verify-edited-n", "verify --against {EDITEDN}", "n is 5 but neurons lists 1"),
    ("verify-edited-delta", "verify --against {EDITEDDELTA}", "delta is 99"),
    ("verify-negative-ppl", "verify --against {NEGPPL}", "baseline_ppl is -5"),
    # search
    ("search-texts-empty", "search --texts '' --out {OUT}", "--texts names no text"),
    ("search-passages-0", "search --passages 0 --out {OUT}", "--passages must be >= 1"),
    # analyze
    ("analyze-unknown", "analyze bogus", "unknown analysis 'bogus'"),
    ("analyze-typo", "analyze phse --out-dir {RUN}", "did you mean 'phase'"),
    ("analyze-alphas-nan", "analyze sweep --alphas 1,nan", "--alphas needs numbers > 0"),
    ("analyze-dtypes", "analyze precision --dtypes float32,float8", "--dtypes takes"),
    ("analyze-phase-no-run", "analyze phase --out-dir {ROOT}/none", "has no ranking.json"),
    ("analyze-levels-0", "analyze components --levels 0", "--levels needs whole numbers >= 1"),
    ("analyze-max-n-0", "analyze phase --out-dir {RUN} --max-n 0", "--max-n must be >= 1"),
    # compare
    ("compare-ranker-typo", "compare --rankers noise,gradiant", "did you mean 'gradient'"),
    ("compare-levels-0", "compare --levels 0,10", "--levels needs whole numbers >= 1"),
    ("compare-random-runs-0", "compare --random-runs 0", "--random-runs must be >= 1"),
    ("compare-alpha-nan", "compare --alpha nan", "--alpha must be > 0 and finite"),
    # report
    ("report-missing", "report {ROOT}/none", "is not a folder"),
    ("report-corrupt-json", "report {BADREPORT}", "not valid JSON"),
    ("report-incomplete-json", "report {INCOMPLETE}", "incomplete or malformed"),
    ("report-edited-critical", "report {EDITEDRUN}", "n is 5 but neurons lists 1"),
    # sites and the command itself
    ("sites-components", "sites --components bogus", "unknown component"),
    ("sites-device", "sites --device foo", "is not a device"),
    ("unknown-command", "scna", "invalid choice"),
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


@pytest.mark.parametrize("name, command, message", CASES, ids=[c[0] for c in CASES])
def test_bad_input(inputs, capsys, name, command, message):
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
    before = files_under(inputs["ROOT"])
    device_before = os.stat(inputs["DEVICE"])
    code = main(argv + ["--quiet"] if argv[0] not in ("scna",) else argv)
    err = capsys.readouterr().err
    assert code == 2, (argv, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("lesion: error: "), err
    assert message in lines[0], lines[0]
    assert "Traceback" not in err
    assert files_under(inputs["ROOT"]) == before, sorted(files_under(inputs["ROOT"]) ^ before)
    device_after = os.stat(inputs["DEVICE"])
    assert (device_after.st_mode, device_after.st_rdev, device_after.st_ino) == \
        (device_before.st_mode, device_before.st_rdev, device_before.st_ino)
