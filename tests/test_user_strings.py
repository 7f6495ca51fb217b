"""Issue 34: user strings are data, readers refuse what they cannot parse, one writer per output.
Quick unit-level cases (no model, no process)."""
from __future__ import annotations

import io

import pytest

from lesion.errors import ParameterError, ResultError
from lesion.runtime.display import printable
from lesion.runtime.files import bounded_json, check_output_path, lock_file, output_locks, read_json


# --- readers refuse what they cannot parse ---------------------------------------------------

@pytest.mark.parametrize("text", [
    '{"n": ' + "9" * 5000 + "}",             # Python's int max str digits: a ValueError before
    "[" * 100_000 + "]" * 100_000,           # a RecursionError before
    '{"a": 1, "a": 2}',
    '{"a": "\xff"}'.encode("latin-1"),
    "x" * 2000,
])
def test_bounded_json_refuses_in_the_callers_class(text):
    with pytest.raises(ResultError):
        bounded_json(text, ResultError, max_bytes=1 << 20)


def test_bounded_json_size_cap_and_depth_cap():
    with pytest.raises(ParameterError):
        bounded_json(b"[1]" + b" " * 100, lambda p: ParameterError("config", p), max_bytes=50)
    assert bounded_json("[[[1]]]", ResultError, max_bytes=100, max_depth=3) == [[[1]]]
    with pytest.raises(ResultError):
        bounded_json("[[[[1]]]]", ResultError, max_bytes=100, max_depth=3)


@pytest.mark.parametrize("body", ['{"n": ' + "1" * 5000 + "}", "[" * 100_000 + "]" * 100_000])
def test_read_json_refuses_huge_numbers_and_deep_nesting(tmp_path, body):
    path = tmp_path / "critical.json"
    path.write_text(body)
    with pytest.raises(ResultError):
        read_json(path)
    assert path.read_text() == body  # the user's file is untouched


@pytest.mark.parametrize("line", ['{"text": ' + "1" * 5000 + "}", "[" * 100_000 + "]" * 100_000,
                                  '{"text": "a\\u0000b", "x": ' + "[" * 100 + "]" * 100 + "}"])
def test_jsonl_corpus_refuses_bad_lines_as_a_parameter(tmp_path, line):
    from lesion.texts.corpora import _local_corpus
    path = tmp_path / "c.jsonl"
    path.write_text('{"text": "fine"}\n' + line + "\n")
    with pytest.raises(ParameterError) as e:
        _local_corpus(path)
    assert e.value.parameter == "corpora"


def test_jsonl_corpus_takes_nul_and_newline_in_text(tmp_path):
    from lesion.texts.corpora import _local_corpus
    path = tmp_path / "c.jsonl"
    path.write_text('{"text": "a\\u0000b\\nc"}\n')
    assert _local_corpus(path) == ["a\x00b\nc"]


# --- one writer per output -------------------------------------------------------------------

def _second_holder_refused(target, parameter="out"):
    """Another process's lock, as flock sees it: a second open file description of the lock file."""
    import fcntl
    import os
    fd = os.open(lock_file(target), os.O_RDWR)
    try:
        with pytest.raises(BlockingIOError):
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    finally:
        os.close(fd)


def test_output_lock_refuses_a_second_writer_and_is_released(tmp_path):
    out = tmp_path / "heel.json"
    with output_locks():
        check_output_path(out, "out")
        assert lock_file(out).exists()
        _second_holder_refused(out)
        with output_locks():  # a second command on the same --out (flock conflicts per open file)
            with pytest.raises(ParameterError) as e:
                check_output_path(out, "out")
            assert e.value.parameter == "out"
    assert not lock_file(out).exists()  # released and removed on the way out
    assert not out.exists()             # nothing was written by the refused run
    with output_locks():                # taken again afterwards
        check_output_path(out, "out")


def test_output_lock_released_on_exception(tmp_path):
    out = tmp_path / "eval.json"
    with pytest.raises(RuntimeError), output_locks():
        check_output_path(out, "out")
        raise RuntimeError("boom")
    with output_locks():
        check_output_path(out, "out")


def test_lock_file_of_a_dead_process_is_taken_over(tmp_path):
    out = tmp_path / "heel.json"
    lock_file(out).write_text("999999999\n")  # left by a killed run: no flock is held on it
    with output_locks():
        check_output_path(out, "out")


def test_planted_lock_link_is_refused(tmp_path):
    out = tmp_path / "heel.json"
    victim = tmp_path / "victim"
    victim.write_text("keep")
    lock_file(out).symlink_to(victim)
    with output_locks(), pytest.raises(ParameterError):
        check_output_path(out, "out")
    assert victim.read_text() == "keep"


def test_journal_refuses_a_second_search(tmp_path):
    import fcntl
    import os
    from lesion.heel.journal import _lock
    path = tmp_path / "heel.json.sets.jsonl"
    path.write_text('{"journal": "x"}\n')
    first = os.open(path, os.O_WRONLY)
    fcntl.flock(first, fcntl.LOCK_EX)
    second = os.open(path, os.O_WRONLY)
    try:
        with pytest.raises(ParameterError) as e:
            _lock(second, path)
        assert e.value.parameter == "journal"
    finally:
        os.close(second)
        os.close(first)
    assert path.read_text() == '{"journal": "x"}\n'


# --- user strings are data -------------------------------------------------------------------

def test_printable_escapes_controls():
    assert printable("a\x1b[31mb") == "a\\x1b[31mb"
    assert printable("a\nb") == "a\\nb"
    assert printable("a\nb", newlines=True) == "a\nb"
    assert printable("x\x00y\u202ez\x9b") == "x\\x00y\\u202ez\\x9b"


@pytest.mark.parametrize("name", ["x[/]y.txt", "[red]a.txt", "[bold]b[/bold]", ":smile:", "a\x1b]0;pwn\x07b"])
def test_console_shows_user_strings_as_data(name):
    from rich.table import Table
    from lesion.cli.tables import DataConsole, styled
    out = io.StringIO()
    console = DataConsole(file=out, width=200, color_system=None)
    console.print(name)
    console.print(styled(("note", "yellow"), ": ", name))
    table = Table("text")
    table.add_row(name)
    console.print(table)
    text = out.getvalue()
    assert "\x1b" not in text
    assert text.count(printable(name)) == 3


@pytest.mark.parametrize("name", ["<img src=x onerror=alert(1)>", "a|b", "`x`", "a\nb", "</textarea><script>"])
def test_markdown_and_html_cells_escape(name):
    from lesion.report.html import html_table, md_table
    md = md_table(["text"], [[name]])
    body = md.splitlines()[2]
    assert body.count("|") - body.count("\\|") == 2  # one cell, whatever the name holds
    assert "<" not in md.replace("\\<", "") and "\n" not in body
    html = html_table(["text"], [[name]])
    assert "<script>" not in html and "<img" not in html


@pytest.mark.parametrize("name", [r"$\undefinedcmd$.txt", "$5 and $6"])
def test_figure_labels_are_not_mathtext(name):
    from lesion.report.figures import PLAIN_TEXT, ranker_comparison
    from lesion.report.html import png_bytes
    fig = ranker_comparison({"rows": [{"ranker": name, "n": 1, "delta": 0.5, "delta_std": 0.1}]})
    assert png_bytes(fig)[:4] == b"\x89PNG"  # drawn, not refused as mathtext
    assert PLAIN_TEXT["text.parse_math"] is False
