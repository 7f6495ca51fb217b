"""Downstream tasks through lm-evaluation-harness, on the masked model object itself.

The harness gets the already-loaded model (``HFLM(pretrained=model)``), never a name to
reload, and the mask context encloses the whole harness run: every task lm-eval knows
is available, and the masks are gone when it returns.
"""
from __future__ import annotations

import functools
import logging
from collections.abc import Sequence
from pathlib import Path

from ..errors import LesionError, MissingPackage, ParameterError
from ..masking.masks import mask_neurons
from ..model.neurons import Neuron, SiteIndex
from .tasks import write_offline_tasks

# The paper's benchmarks and the lm-eval task names that implement them (all need the hub).
PAPER_TASKS = {"MMLU-Pro": "mmlu_pro", "GPQA-Diamond": "gpqa_diamond_zeroshot",
               "HumanEval": "humaneval", "MATH": "minerva_math", "MGSM": "mgsm_direct",
               "IFEval": "ifeval", "SimpleQA": None}


@functools.cache
def _task_manager(include_path: str):
    """lm-eval's index of every task it knows (seconds to build): one per process and include path,
    shared by the check before an evaluation and each level's run."""
    try:
        from lm_eval.tasks import TaskManager
    except ImportError:
        raise MissingPackage("downstream tasks need lm-eval: pip install lm-eval") from None
    logging.getLogger("lm_eval").setLevel(logging.ERROR)
    return TaskManager(include_path=include_path)


def check_tasks(tasks: Sequence[str], include_path: str | Path | None = None):
    """lm-eval's task manager, once every task is known to it (checked before any evaluation runs)."""
    manager = _task_manager(str(include_path or write_offline_tasks()))
    unknown = [t for t in tasks if t not in manager.all_tasks]
    if unknown:
        raise ParameterError("tasks", f"names unknown lm-eval task(s) {', '.join(unknown)}: see `lm-eval ls tasks`, "
                                      "or use the offline tasks lesion_mmlu_dev, lesion_wiki_cloze")
    return manager


def run_harness(model, tokenizer, index: SiteIndex, neurons: Sequence[Neuron], tasks: Sequence[str], *,
                limit: int | None = None, num_fewshot: int | None = None, batch_size: int = 8,
                include_path: str | Path | None = None) -> dict:
    """{task: {metric: value}} with ``neurons`` masked during the whole run."""
    from lm_eval import simple_evaluate
    from lm_eval.models.huggingface import HFLM
    manager = check_tasks(tasks, include_path)
    harness_model = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size)
    with mask_neurons(model, index, list(neurons)):
        try:
            out = simple_evaluate(model=harness_model, tasks=list(tasks), task_manager=manager, limit=limit,
                                  num_fewshot=num_fewshot, log_samples=False, verbosity="ERROR")
        except (ConnectionError, OSError, ValueError) as e:
            raise LesionError(f"lm-eval could not run {', '.join(tasks)} ({type(e).__name__}: "
                              f"{str(e).splitlines()[0][:150]}): offline, use lesion_mmlu_dev, "
                              "lesion_wiki_cloze or `humaneval`") from None
    return {task: {k.split(",")[0]: v for k, v in metrics.items()
                   if isinstance(v, (int, float)) and not k.endswith("_stderr,none") and k != "alias"}
            for task, metrics in out["results"].items()}
