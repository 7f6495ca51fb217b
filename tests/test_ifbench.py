"""IFBench: the package's checkers really judge responses, and generation runs under the mask."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from lesion.cli import main
from lesion.errors import LesionError
from lesion.evaluation import ifbench
from lesion.evaluation.ifbench import IFBenchPrompt, IFBenchResult, PromptOutcome, check_response, load_prompts
from lesion.masking.masks import hooked

from conftest import char_tokenizer, make_tiny, scan_tiny

SIMPLE_CHAT = ("{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}{% endfor %}"
               "{% if add_generation_prompt %}<a>{% endif %}")


def prompt_with(instruction_id: str) -> IFBenchPrompt:
    return next(p for p in load_prompts() if p.instruction_ids == (instruction_id,))


def test_the_shipped_test_set_is_read_whole():
    prompts = load_prompts()
    assert len(prompts) == 294 and len({p.key for p in prompts}) == 294
    assert all(len(p.instruction_ids) == len(p.kwargs) >= 1 for p in prompts)
    spread = load_prompts(12)
    assert [p.key for p in spread] == [prompts[i * 294 // 12].key for i in range(12)]
    assert len({p.instruction_ids[0].split(":")[0] for p in spread}) >= 5  # not one group of the file


def test_a_response_that_follows_the_instruction_passes_and_one_that_does_not_fails():
    prompt = prompt_with("count:keywords_multiple")
    words = [prompt.kwargs[0][f"keyword{i}"] for i in range(1, 6)]
    following = " ".join(f"{w} " * count for w, count in zip(words, (1, 2, 3, 5, 7)))
    assert check_response(prompt, following).strict == (True,)
    violating = following.replace(words[4], "", 1)  # one time too few
    outcome = check_response(prompt, violating)
    assert outcome.strict == (False,) and outcome.loose == (False,)


def test_loose_forgives_a_first_line_that_strict_does_not():
    prompt = prompt_with("format:no_whitespace")
    assert check_response(prompt, "nowhitespaceatall").strict == (True,)
    outcome = check_response(prompt, "Sure:\nnowhitespaceatall")
    assert outcome.strict == (False,) and outcome.loose == (True,)


def test_an_empty_response_follows_nothing():
    outcome = check_response(prompt_with("format:no_whitespace"), "")
    assert outcome.strict == (False,) and outcome.loose == (False,)


def test_a_checker_without_its_nltk_data_is_unchecked_not_failed():
    import nltk

    try:
        nltk.data.find("corpora/stopwords")
        expected_checked = True
    except LookupError:
        expected_checked = False
    outcome = check_response(prompt_with("ratio:stop_words"), "A short reply with a few words in it.")
    assert (outcome.strict[0] is not None) == expected_checked


def test_accuracies_count_prompts_and_instructions():
    result = IFBenchResult((
        PromptOutcome("a", "", ("x", "y"), (True, False), (True, True)),
        PromptOutcome("b", "", ("x",), (True,), (True,)),
        PromptOutcome("c", "", ("z", "x"), (None, True), (None, True)),  # z unchecked: scored on x alone
        PromptOutcome("d", "", ("z",), (None,), (None,)),  # nothing checked: not a prompt-level sample
    ))
    d = result.to_dict()
    assert (d["prompts"], d["instructions"], d["unchecked_instructions"]) == (4, 6, 2)
    assert d["prompt_strict"] == pytest.approx(2 / 3) and d["prompt_loose"] == 1.0
    assert d["instruction_strict"] == pytest.approx(3 / 4) and d["instruction_loose"] == 1.0


def test_chat_generation_needs_a_chat_template():
    model, tokenizer = make_tiny("llama"), char_tokenizer()
    with pytest.raises(LesionError, match="no(ne)? chat template|has none"):
        ifbench.chat_generate(model, tokenizer, "Say hi.", 4)
    tokenizer.chat_template = SIMPLE_CHAT
    reply = ifbench.chat_generate(model, tokenizer, "Say hi.", 4)
    assert reply and "Say hi" not in reply and "<a>" not in reply  # the reply alone, without the prompt


@pytest.fixture(scope="module")
def critical(tiny_dir, tmp_path_factory):
    return str(scan_tiny(tiny_dir, tmp_path_factory.mktemp("scan"), samples=6) / "critical.json")


def test_ifbench_cli_generates_under_the_mask_and_reports(tiny_dir, critical, monkeypatch, capsys):
    from lesion.model.neurons import Neuron

    neurons = [Neuron.parse(n) for n in json.loads(Path(critical).read_text())["neurons"]]
    masked_during_generation = []

    def watch(model, tokenizer, prompt, max_new_tokens):
        # A hook added after the mask sees what the rest of the model sees: the channel at 0.
        first = neurons[0]
        seen = []
        with hooked(model, {first.module: lambda out: seen.append(bool((out[..., first.channel] == 0).all()))}):
            model(tokenizer("probe", return_tensors="pt").input_ids)
        masked_during_generation.append(seen[0])
        return "nowhitespace"

    monkeypatch.setattr(ifbench, "chat_generate", watch)
    run_dir = Path(critical).parent
    assert main(["eval", "--model", tiny_dir, "--neurons", critical, "--corpus", "none", "--ifbench", "2",
                 "--quiet", "--out", str(run_dir / "eval.json")]) == 0
    assert masked_during_generation == [False, False, True, True]  # level 0, then the critical set
    result = json.loads((run_dir / "eval.json").read_text())["ifbench"]
    assert set(result) == {"0", str(len(neurons))}
    for level in result.values():
        assert level["prompts"] == 2 and [o["key"] for o in level["outcomes"]] == [p.key for p in load_prompts(2)]
        assert all(o["response"] == "nowhitespace" for o in level["outcomes"])
    assert "IFBench" in capsys.readouterr().out
    from lesion.report import build_report
    html_path, _ = build_report(run_dir)
    assert "IFBench" in html_path.read_text()


def test_ifbench_cli_bad_count(tiny_dir, critical, tmp_path, refused):
    refused(["eval", "--model", tiny_dir, "--neurons", critical, "--corpus", "none", "--ifbench", "-1",
             "--quiet", "--out", str(tmp_path / "e.json")], "ifbench")
    assert not (tmp_path / "e.json").exists()
