"""Where a neuron sits in the model's computation: the norms, the forward order, the module that writes
it into the residual stream."""
from __future__ import annotations

from collections.abc import Sequence

import torch

from ..model import architectures
from ..masking.masks import hooked, mask_neurons
from ..model.neurons import Neuron, SiteIndex
from ..results.mechanism import (ResidualWrite)
from ..model.weights import RESIDUAL_WRITERS
# Rows per forward when scoring single lesions: a row holds the logits of the whole
# vocabulary at every token (262k words for Gemma 3).
SCORING_ROWS = 8


def norm_layers(model: torch.nn.Module) -> list[str]:
    """Names of the norm layers in forward order (block norms, per-head q/k norms, final norm)."""
    return [n for n, m in model.named_modules()
            if next(m.children(), None) is None and architectures.kind_of(n, m) in ("ln", "norm")]


def forward_order(model: torch.nn.Module, input_ids: torch.Tensor) -> list[str]:
    """Leaf modules in the order their forwards finish (registration order is not forward
    order: Llama registers ``input_layernorm`` after ``mlp``)."""
    order: list[str] = []
    leaves = [n for n, m in model.named_modules() if n and next(m.children(), None) is None]
    with hooked(model, {n: (lambda out, n=n: order.append(n)) for n in leaves}), torch.inference_mode():
        model(input_ids=input_ids)
    return order


def following_norm(model: torch.nn.Module, module: str, order: Sequence[str]) -> str | None:
    """The first residual-stream norm to run after ``module``: for a Llama ``down_proj`` the next
    block's ``input_layernorm`` (the final norm after the last block); for Gemma's sandwich
    layout the ``post_feedforward_layernorm`` that reads it directly."""
    later = order[order.index(module) + 1:]
    return next((n for n in later if architectures.kind_of(n, model.get_submodule(n)) == "ln"), None)


def writer_of(model: torch.nn.Module, index: SiteIndex, neuron: Neuron, order: Sequence[str]) -> str | None:
    """The module whose output is added to the residual stream next after ``neuron``: its own
    module for a ``down``/``o`` neuron, else the first residual writer after it in forward
    order (its block's ``down`` for gate/up/act, ``o`` for q/k/v and the q/k norms); None
    after the last one."""
    if index.site(neuron).kind in RESIDUAL_WRITERS:
        return neuron.module
    later = order[order.index(neuron.module) + 1:]
    return next((n for n in later if n in index.by_name and index.by_name[n].kind in RESIDUAL_WRITERS), None)


def residual_writes(model: torch.nn.Module, input_ids: torch.Tensor, index: SiteIndex,
                    neurons: Sequence[Neuron], order: Sequence[str],
                    acts: dict[str, torch.Tensor] | None = None) -> list[ResidualWrite | None]:
    """For each neuron, the residual-stream channel that carries most of its effect.

    Defined by masking, the same way for every kind: mask the neuron and compare the output of
    its next residual writer (:func:`writer_of`) with the clean one; the channel (and
    position) with the largest |change| is the one it writes into. For a ``down``/``o``
    neuron that is its own channel; for a gate/up neuron, mostly the ``down`` row whose input
    column has the largest |w|; for q/k it depends on the attention pattern, which no single
    weight shows. One batch row per neuron (row 0 clean), ``SCORING_ROWS`` at a time. None
    where nothing changes (a dead neuron, or no writer after it).

    With the clean activations ``acts`` (:func:`lesion.method.rankers.clean_activations`), a neuron
    that is its own writer costs no forward: masking it changes only its own channel, by its
    own activation.
    """
    writers = [writer_of(model, index, n, order) for n in neurons]
    changes: dict[int, torch.Tensor] = {}  # neuron's place -> |change| of its writer's output, (T, C)
    masked = [i for i, (n, w) in enumerate(zip(neurons, writers))
              if w and not (acts is not None and w == n.module and n.module in acts)]
    for i, (n, w) in enumerate(zip(neurons, writers)):
        if w and i not in masked and acts is not None:  # not masked: its own writer, read from acts
            change = torch.zeros_like(acts[w])
            change[:, n.channel] = acts[w][:, n.channel].abs()
            changes[i] = change
    for start in range(0, len(masked), SCORING_ROWS):
        chunk = masked[start:start + SCORING_ROWS]
        outputs = _masked_writer_outputs(model, input_ids, index, [neurons[i] for i in chunk],
                                         [writers[i] for i in chunk])
        for row, i in enumerate(chunk, 1):
            written = outputs[str(writers[i])]
            changes[i] = (written[row] - written[0]).abs()
    out: list[ResidualWrite | None] = []
    for i, (neuron, writer) in enumerate(zip(neurons, writers)):
        found = changes.get(i)
        if found is None or writer is None or not float(found.max()) > 0:
            out.append(None)
            continue
        position, channel = divmod(int(found.argmax()), found.shape[1])
        out.append(ResidualWrite(neuron=str(Neuron(writer, channel)), writer=writer, channel=channel,
                                 position=position, largest_change=float(found.max()),
                                 how=OWN_OUTPUT if writer == neuron.module else
                                 f"largest change of {writer}'s output when the neuron is masked"))
    return out


def _masked_writer_outputs(model, input_ids, index, neurons, writers) -> dict[str, torch.Tensor]:
    """Each writer's output, (rows, T, C) float32: row 0 clean, row i with ``neurons[i - 1]`` masked."""
    outputs: dict[str, torch.Tensor] = {}
    t = input_ids.shape[1]
    record = {w: (lambda out, w=w: outputs.__setitem__(w, index.by_name[w].channels(out, t).float()))
              for w in set(writers)}
    sets = [[]] + [[n] for n in neurons]
    with mask_neurons(model, index, sets), hooked(model, record), torch.inference_mode():
        model.base_model(input_ids=input_ids.expand(len(sets), -1))
    return outputs


OWN_OUTPUT = "its own output"  # how a down/o neuron writes the residual stream
