"""What a result was made with (its text or texts, its ablation), used unless overridden.

Every command that reads a result feeds the model what the result recorded: a critical set
its one text, a heel every text it was found on (``settings.texts`` for a multi-text heel),
under the ablation it was scored with. The model and dtype come the same way (the CLI's
``load(args, recorded=settings)``). An explicit override is honoured and named in a note,
since it changes the answer; :func:`reproduce` re-scores a neuron set on what it recorded.

    lm = load_model("smollm2-135m")
    heel = Heel.load("heel.json")
    for row in reproduce(heel, lm):
        print(row.name, row.delta, row.recorded_delta)   # equal to 1e-6
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from ..masking.ablation import baseline_nll, check_ablation, masked_nll
from ..errors import ParameterError, ResultError
from ..masking.metrics import delta, perplexity
from ..model.neurons import Neuron, discover_sites
from ..runtime.options import ABLATIONS, first_repeat
from ..results import Heel, NeuronSet, Settings, TextScore, recorded_text
from ..texts.text import BOOKENDS, check_context, encode, text_hash

# |Delta now - Delta recorded| <= 1e-6 x max(1, |Delta recorded|): the search scores sets in batches,
# and float32 forwards of another batch size move the 7th significant digit (SmolLM2: 4e-6 of 5.91).
REPRODUCE_TOLERANCE = 1e-6


@dataclass(frozen=True)
class Inputs:
    """The texts (name, text) and ablation to score a result on, and a note per override."""
    texts: tuple[tuple[str, str], ...]
    ablation: str
    notes: tuple[str, ...] = ()
    recorded: tuple[float | None, ...] = ()  # the Delta recorded on each text, when it is recorded


def recorded_ablation(settings: Settings) -> str:
    """The ablation a result was scored with: a heel records it; Stage 2 always zeroes."""
    ablation = settings.ablation or "zero"
    if ablation not in ABLATIONS:
        raise ResultError(f"the result records ablation {ablation!r}, which this lesion does not know "
                          f"({', '.join(ABLATIONS)}): re-create it with this lesion")
    return ablation


def recorded_texts(result: NeuronSet, source: str | Path) -> list[tuple[str, str, float | None]]:
    """(name, text, Delta recorded on it) for every text ``result`` was found on, each checked
    against its recorded SHA-256."""
    settings = result.settings
    many = settings.texts
    per_text: list[TextScore] = list(result.texts) if isinstance(result, Heel) else []
    if not many:
        name = (per_text[0].name if per_text else None) or "text"
        return [(name, recorded_text(settings, None, source), result.delta)]
    if len(per_text) != len(many):
        raise ResultError(f"{str(source)!r} records its texts incompletely (settings.texts and texts differ): "
                          "re-create it with lesion")
    rows = []
    for i, (text, info) in enumerate(zip(many, per_text)):
        if info.sha256 not in (None, text_hash(text)):
            raise ResultError(f"text {i + 1} kept with {str(source)!r} does not match its recorded SHA-256 (it "
                              "was edited or replaced): re-create the result with lesion")
        rows.append((info.name or f"text{i + 1}", text, info.delta))
    return rows


def resolve_ablation(result: NeuronSet, source: str | Path, ablation: str | None = None) -> tuple[str, tuple[str, ...]]:
    """The ablation to mask ``result``'s neurons with: the recorded one, or ``ablation`` where
    given, with a note when it differs from the recorded one."""
    kept = recorded_ablation(result.settings)
    if ablation is None:
        return kept, ()
    check_ablation(ablation)
    if ablation == kept:
        return kept, ()
    return ablation, (f"`ablation` {ablation} overrides the {kept} ablation {str(source)!r} was found with",)


def resolve_inputs(result: NeuronSet, source: str | Path, text: str | None = None,
                   ablation: str | None = None) -> Inputs:
    """The texts and ablation to score ``result`` on: the recorded ones, or ``text`` /
    ``ablation`` where given (one note each when they differ from what was recorded)."""
    texts = recorded_texts(result, source)
    chosen, overridden = resolve_ablation(result, source, ablation)
    notes = [f"{note}: its Delta is not reproduced" for note in overridden]
    if text is not None:
        same = [row for row in texts if text_hash(row[1]) == text_hash(text)]
        if same:
            texts = same
        else:
            notes.append(f"the text given is not one {str(source)!r} was found on: its recorded Delta does "
                         "not apply (drop `text` and `text_file` to reproduce it)")
            texts = [("given text", text, None)]
    return Inputs(tuple((n, t) for n, t, _ in texts), chosen, tuple(notes),
                  tuple(None if overridden else d for _, _, d in texts))


@dataclass(frozen=True)
class Reproduction:
    """One text's figures: the neuron set masked as a whole, then each neuron alone."""
    name: str
    tokens: int
    baseline_ppl: float
    masked_ppl: float
    delta: float
    recorded_delta: float | None
    alone: tuple[tuple[str, float, float], ...] = field(default=())  # (neuron, PPL, Delta)

    @property
    def reproduced(self) -> bool | None:
        """True when the Delta matches the recorded one to 1e-6 (relative, above 1); None when none was recorded."""
        if self.recorded_delta is None:
            return None
        if math.isinf(self.recorded_delta) or math.isinf(self.delta):
            return self.delta == self.recorded_delta
        return abs(self.delta - self.recorded_delta) <= REPRODUCE_TOLERANCE * max(1.0, abs(self.recorded_delta))


def reproduce(result: NeuronSet, lm, inputs: Inputs | None = None, source: str | Path = "the result",
              extra: Sequence[Neuron] = (), alone: bool = True) -> list[Reproduction]:
    """Re-score ``result``'s neurons (plus ``extra``) on every text it records, under its
    ablation (or on ``inputs`` from :func:`resolve_inputs`): one :class:`Reproduction` per text.
    With the recorded inputs and no ``extra``, each Delta equals the recorded one to 1e-6."""
    inputs = inputs or resolve_inputs(result, source)
    neurons = list(result.neurons) + [n for n in extra if n not in result.neurons]
    recorded = inputs.recorded if not extra else ()
    return _score(lm, neurons, inputs, recorded, alone)


def _score(lm, neurons: list[Neuron], inputs: Inputs, recorded: Sequence[float | None],
           alone: bool) -> list[Reproduction]:
    index = discover_sites(lm.model, "all")
    index.check(neurons)
    rows = []
    for (name, text), was in zip(inputs.texts, recorded or (None,) * len(inputs.texts)):
        ids = encode(lm.tokenizer, text, lm.device)
        check_context(lm.model, ids)
        clean = baseline_nll(lm.model, ids, lm.dtype)
        sets = [neurons] + ([[n] for n in neurons] if alone and len(neurons) > 1 else [])
        # One set per forward, as the search scored them: batching moves the last bits of a float.
        nlls = [masked_nll(lm.model, ids, index, [s], ablation=inputs.ablation)[0] for s in sets]
        rows.append(Reproduction(name, int(ids.shape[1]), perplexity(clean), perplexity(nlls[0]),
                                 delta(nlls[0], clean), was,
                                 tuple((str(s[0]), perplexity(nll), delta(nll, clean))
                                       for s, nll in zip(sets[1:], nlls[1:]))))
    return rows


@dataclass(frozen=True)
class Masking:
    """What :func:`masked_perplexity` measured: a row per text (the set, then each neuron alone)."""
    rows: tuple[Reproduction, ...]
    size: int  # neurons masked as the set
    ablation: str
    notes: tuple[str, ...] = ()  # what an override changed


def check_mask_neurons(neurons: Sequence[Neuron | str], result=None) -> list[Neuron]:
    """The neurons :func:`masked_perplexity` masks, parsed and checked without a model: each once,
    and at least one unless a ``result`` gives them."""
    parsed = [n if isinstance(n, Neuron) else Neuron.parse(n) for n in neurons]
    twice = first_repeat(parsed)
    if twice is not None:
        raise ParameterError("neurons", f"lists {parsed[twice]} twice: a set holds each neuron once; drop the repeat")
    if result is None and not parsed:
        raise ParameterError("neurons", "names none to mask: name them (module:channel) or give a `result` "
                                        "(a critical set or heel)")
    return parsed


def masked_perplexity(lm, neurons: Sequence[Neuron | str] = (), *, result: NeuronSet | str | Path | None = None,
                      text: str | None = None, ablation: str | None = None, alone: bool = True) -> Masking:
    """``lesion mask`` as one call: the perplexity of each text with the neurons masked, as a
    set and (``alone``) one by one.

    With ``result`` (a critical set or heel, or its file): its neurons plus ``neurons``, on the
    texts and under the ablation it recorded, each row against its recorded Delta (``text`` or
    ``ablation`` override them, with a note, and the recorded Delta no longer applies); refused
    on another model. Without: ``neurons`` on ``text`` (default: the Bookends sentence) under
    ``ablation`` (default zero).

        masked_perplexity(lm, ["model.layers.11.mlp.down_proj:507"]).rows[0].delta
        masked_perplexity(lm, result="heel.json").rows  # each row's delta equals its recorded_delta
    """
    extra = check_mask_neurons(neurons, result)
    if result is None:
        inputs = Inputs((("text", BOOKENDS if text is None else text),), ablation or "zero")
        check_ablation(inputs.ablation)
        return Masking(tuple(_score(lm, extra, inputs, (), alone)), len(extra), inputs.ablation)
    source: str | Path = "the result"
    if isinstance(result, (str, Path)):
        from .runfolder import read_neuron_set
        source, result = result, read_neuron_set(result)
    if not result.neurons and not extra:
        from .runfolder import no_neurons
        raise ParameterError("result", f"{str(source)!r} {no_neurons(result)}")
    from ..method.study import check_same_model
    check_same_model(result.settings, lm, "neuron set")
    inputs = resolve_inputs(result, source, text, ablation)
    rows = reproduce(result, lm, inputs, source, extra=extra, alone=alone)
    size = len(result.neurons) + len([n for n in extra if n not in result.neurons])
    return Masking(tuple(rows), size, inputs.ablation, inputs.notes)


def zero_only_note(settings: Settings, source: str | Path, say) -> None:
    """For a command that masks by zeroing only: say so when the result was found with another ablation."""
    ablation = recorded_ablation(settings)
    if ablation != "zero":
        say(f"note: this command masks by zeroing; {source} was found with the {ablation} "
            "ablation, so its figures here differ from the recorded ones")
