"""harden.md: the proof and the heel before and after, side by side, from a HardenRecord."""
from __future__ import annotations

from ..results.harden import Budget, HardenRecord, HeelComparison, Proof, SameSet, SetSummary


def _g(x) -> str:
    if x is None:
        return "-"
    if isinstance(x, bool):
        return "yes" if x else "no"
    if isinstance(x, float):
        return f"{x:.3g}" if x == 0 or 1e-3 <= abs(x) < 1e5 else f"{x:.2e}"
    return str(x)


def proof_table(proof: Proof) -> list[str]:
    lines = ["| text | tokens | PPL original | PPL hardened | relative difference | max abs logit difference "
             "(max abs logit) |", "|---|---|---|---|---|---|"]
    for name, t in proof.texts.items():
        lines.append(f"| {name} | {t.tokens} | {_g(t.ppl_before)} | {_g(t.ppl_after)} | "
                     f"{_g(t.ppl_rel_diff)} | {_g(t.max_abs_logit_diff)} ({_g(t.max_abs_logit)}) |")
    gens = ", ".join(f"{g.tokens} tokens "
                     f"{'identical' if g.identical else 'differ at ' + str(g.first_difference)}"
                     for g in proof.generations)
    lines += ["", f"Greedy generations: {gens}.", "",
              "Every weight keeps its shape, so inference costs the same; `python benchmarks/harden_speed.py` "
              "times both models in alternation."]
    return lines


def heel_table(heel: HeelComparison) -> list[str]:
    before, after = heel.before, heel.after
    rows = [("largest residual activation / median (layer, channel)",
             f"{_g(before.outliers.max_ratio)} ({before.outliers.layer}, {before.outliers.channel})",
             f"{_g(after.outliers.max_ratio)} ({after.outliers.layer}, {after.outliers.channel})")]
    for b, a in zip(before.masked, after.masked):
        rows.append((f"Delta masking `{b.neuron}` alone", _g(b.delta), _g(a.delta)))
    searches = (("prefix n* (Stage 1 + 2)", before.scan, after.scan),
                ("smallest heel `lesion search` finds", before.search, after.search),
                ("smallest heel among the MLP's intermediate neurons (gate, up, act), which no rotation moves",
                 before.fixed_basis, after.fixed_basis))
    for i, (label, b_set, a_set) in enumerate(searches):
        if b_set is not None and a_set is not None:
            rows.append((label, _set(b_set), _set(a_set)))
            rows.append((f"{label}: where", _where(b_set), _where(a_set)))
        if i == 1 and before.search is not None and after.original_heel is not None:  # below the search's rows
            rows.append(("the original's heel above, masked as one set", _g(before.search.delta),
                         _g(after.original_heel.delta)))
    lines = ["| | original | hardened |", "|---|---|---|"]
    lines += [f"| {a} | {b} | {c} |" for a, b, c in rows]
    return lines


def _plural(n: int) -> str:
    return f"{n} neuron{'s' if n != 1 else ''}"


def _set(s: SetSummary | SameSet) -> str:
    if isinstance(s, SameSet):
        return f"the same {_plural(s.n)}: Delta {_g(s.delta)}"
    if s.reached:
        text = f"{_plural(s.n)}, Delta {_g(s.delta)}"
    else:
        text = f"none within the budget (best Delta {_g(s.delta if s.best_delta is None else s.best_delta)})"
    return text + (f", {s.rows} rows" if s.rows is not None else "")


def _where(s: SetSummary | SameSet) -> str:
    if not s.reached and not isinstance(s, SameSet):
        return "-"
    modules = ", ".join(f"{k} {v}" for k, v in s.where.modules.items())
    layers = ", ".join(s.where.layers)
    return f"{modules}; layers {layers}"


def rotation_lines(r) -> list[str]:
    """What was rotated, in words: the stream (or why not), the heads, how the query/key planes turned."""
    if r.residual is False:
        text = (f"Residual stream of width {r.hidden_size} left as it is (a `{r.model_type}` model normalises each "
                "branch's output with a per-channel scale before the residual add: no rotation of the stream is "
                f"exact); inside the heads only: `{r.method}`, seed {r.seed}")
    else:
        text = f"Rotation: `{r.method}`, seed {r.seed}, residual width {r.hidden_size}"
    h = r.heads
    if h:
        text += ", inside heads too (values/o_proj per head"
        if h.qk_angles == "none":
            text += "; queries/keys left as they are)"
        else:
            how = {"fitted": "angles fitted on lesion's texts " + ", ".join(h.calibration or ()),
                   "random": "random angles"}.get(h.qk_angles or "random", h.qk_angles or "")
            text += f"; queries/keys in {h.queries_keys_layers} layers' rotary planes"
            if h.qk_planes is not None:
                text += f", {h.qk_planes} plane rotations, {how}"
                if h.qk_planes_pinned:
                    text += f"; {h.qk_planes_pinned} planes pinned by the per-channel q/k norm"
            text += ")"
    return [text + "."]


def markdown(record: HardenRecord) -> str:
    r = record.rotation
    lines = [f"# Hardened {record.source_model}", ""] + rotation_lines(r) + [
             f"Source fingerprint `{record.source_fingerprint}`; hardened `{record.hardened_fingerprint}`. "
             f"Embeddings untied: {_g(r.untied_embeddings)}. Largest |M M^T - I| of the rotations: "
             f"{_g(r.orthogonality_error)}.", ""]
    if r.spread:
        lines += [f"Channel {r.spread.channel} under Q: the largest share of its energy one new channel holds is "
                  f"{_g(r.spread.top_share)} (even spread: {_g(r.spread.uniform_share)}); max |Q_cj| sqrt(n) = "
                  f"{_g(r.spread.flatness)} (1 is perfectly even).", ""]
    for precision, proof in record.proof.items():
        lines += [f"## The function is kept: {precision}", ""] + proof_table(proof) + [""]
    if record.heel:
        heel = record.heel
        lines += ["## The heel before and after", "", f"On the text of SHA-256 `{heel.text_sha256[:16]}`"
                  + (f", budget {_budget(heel.budget)}" if heel.budget else "") + ".", ""]
        lines += heel_table(heel) + [""] + verdict(heel)
    return "\n".join(lines)


def _budget(budget: Budget) -> str:
    """As the report has always printed it: the budget's fields as a Python dict."""
    return str(budget.to_dict())


def verdict(heel: HeelComparison) -> list[str]:
    """What the table means for the question a user asks: is a small heel left?"""
    lines = searched(heel)
    fixed, before = heel.after.fixed_basis, heel.before.fixed_basis
    if fixed is None or not fixed.reached or before is None:
        return lines
    n = fixed.n
    return lines + [f"A heel of {n} MLP intermediate neuron{'s' if n != 1 else ''} (Delta {_g(fixed.delta)} after, "
                    f"{_g(before.delta)} before) survives hardening: no exact rotation moves those "
                    f"neurons, so this model's smallest heel has at most {_plural(n)} in any basis.", ""]


def searched(heel: HeelComparison) -> list[str]:
    """The default search's heel on each model, side by side, in one sentence."""
    before, after = heel.before.search, heel.after.search
    if before is None or after is None:
        return []

    def found(s: SetSummary) -> str:
        if not s.reached:
            return f"no heel within the budget (best Delta {_g(s.delta)} with {_plural(s.n)})"
        part = f", found by its `{s.found_by}` part" if s.found_by not in (None, "all") else ""
        return f"a heel of {_plural(s.n)} (Delta {_g(s.delta)}{part}: {', '.join(s.all_neurons or s.neurons)})"
    return [f"`lesion search` (its defaults, {after.rows} and {before.rows} masked rows) finds {found(after)} in the "
            f"hardened model, and {found(before)} in the original.", ""]
