"""Offline downstream tasks for lm-evaluation-harness, built from real data that installs
from PyPI, written as lm-eval task folders (``dataset_path: json``).

- ``lesion_mmlu_dev``: the 281 clean 4-choice MMLU dev questions (57 subjects) that lm-eval embeds
  in its own ``mmlu/flan_cot_fewshot`` YAML files, asked zero-shot as 4-way multiple choice.
- ``lesion_wiki_cloze``: 4-way next-sentence choice on the real Wikipedia articles of the
  gensim wheel: a passage, its true next sentence and three next sentences of other
  articles (a HellaSwag-style task; chance is 25%).
"""
from __future__ import annotations

import json
import random
import re
from pathlib import Path

import yaml

from ..runtime.files import cache_dir
from ..runtime.files import write_text
from ..texts.corpora import enwiki_gensim, prose_paragraphs, sentences

TASKS = ("lesion_mmlu_dev", "lesion_wiki_cloze")
# The paper's benchmarks under their lm-eval names (they download from the hub; SimpleQA has no task).
# docs/evaluation.md lists them; a test checks lm-eval's registry still knows each name.
PAPER_TASKS = {"MMLU-Pro": "mmlu_pro", "GPQA-Diamond": "gpqa_diamond_zeroshot", "HumanEval": "humaneval",
               "MATH": "minerva_math", "MGSM": "mgsm_direct", "IFEval": "ifeval"}
LETTERS = "ABCD"


def mmlu_dev_rows() -> list[dict]:
    import lm_eval

    folder = Path(lm_eval.__file__).parent / "tasks" / "mmlu" / "flan_cot_fewshot"
    rows = []
    for path in sorted(folder.glob("mmlu_*.yaml")):
        spec = yaml.safe_load(path.read_text())
        for sample in spec.get("fewshot_config", {}).get("samples", []):  # foreign JSON
            parts = re.split(r"\(([A-D])\) ", sample["question"])  # foreign JSON
            answer = re.search(r"answer is \(([A-D])\)", sample["target"])  # foreign JSON
            if len(parts) != 9 or answer is None:
                continue  # not a clean 4-choice question
            stem = parts[0].strip()
            choices = [parts[i].strip() for i in (2, 4, 6, 8)]
            rows.append({"subject": spec["dataset_name"], "question": stem, "choices": choices,  # foreign JSON
                         "label": LETTERS.index(answer.group(1))})
    return rows


def wiki_cloze_rows(n: int = 300, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    articles = []
    for doc in enwiki_gensim():
        kept = [s for p in prose_paragraphs(doc) for s in sentences(p) if 40 <= len(s) <= 250]
        if len(kept) >= 4:
            articles.append(kept)
    rows = []
    for _ in range(n):
        a = rng.randrange(len(articles))
        i = rng.randrange(len(articles[a]) - 2)
        context = " ".join(articles[a][i:i + 2])
        others = rng.sample([k for k in range(len(articles)) if k != a], 3)
        choices = [articles[a][i + 2]] + [rng.choice(articles[k]) for k in others]
        order = list(range(4))
        rng.shuffle(order)
        rows.append({"context": context, "choices": [choices[j] for j in order], "label": order.index(0)})
    return rows


def _task_yaml(name: str, data: Path, text: str) -> dict:
    return {"task": name, "dataset_path": "json", "dataset_kwargs": {"data_files": {"test": str(data)}},
            "test_split": "test", "output_type": "multiple_choice", "doc_to_text": text,
            "doc_to_choice": "{{choices}}", "doc_to_target": "{{label}}",
            "metric_list": [{"metric": "acc", "aggregation": "mean", "higher_is_better": True},
                            {"metric": "acc_norm", "aggregation": "mean", "higher_is_better": True}]}


def write_offline_tasks(folder: Path | None = None) -> Path:
    """Write the offline task folder (once) and return it, for ``TaskManager(include_path=...)``."""
    folder = Path(folder or cache_dir() / "tasks")
    folder.mkdir(parents=True, exist_ok=True)
    specs = {
        "lesion_mmlu_dev": (mmlu_dev_rows, ("{{question}}\nA. {{choices[0]}}\nB. {{choices[1]}}\n"
                                            "C. {{choices[2]}}\nD. {{choices[3]}}\nAnswer:")),
        "lesion_wiki_cloze": (wiki_cloze_rows, "{{context}}"),
    }
    for name, (rows, text) in specs.items():
        data = folder / f"{name}.jsonl"
        if not data.is_file():
            write_text(data, "".join(json.dumps(r) + "\n" for r in rows()))
        task = _task_yaml(name, data, text)
        if name == "lesion_mmlu_dev":
            task["doc_to_choice"] = [" A", " B", " C", " D"]
        write_text(folder / f"{name}.yaml", yaml.safe_dump(task, sort_keys=False))
    return folder
