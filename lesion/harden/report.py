"""harden.md: the proof and the heel before and after, side by side, from a HardenRecord."""
from __future__ import annotations


def _g(x) -> str:
    if x is None:
        return "-"
    if isinstance(x, bool):
        return "yes" if x else "no"
    if isinstance(x, float):
        return f"{x:.3g}" if x == 0 or 1e-3 <= abs(x) < 1e5 else f"{x:.2e}"
    return str(x)


def proof_table(proof: dict) -> list[str]:
    lines = ["| text | tokens | PPL original | PPL hardened | relative difference | max abs logit difference "
             "(max abs logit) |", "|---|---|---|---|---|---|"]
    for name, t in proof["texts"].items():
        lines.append(f"| {name} | {t['tokens']} | {_g(t['ppl_before'])} | {_g(t['ppl_after'])} | "
                     f"{_g(t['ppl_rel_diff'])} | {_g(t['max_abs_logit_diff'])} ({_g(t['max_abs_logit'])}) |")
    gens = ", ".join(f"{g['tokens']} tokens "
                     f"{'identical' if g['identical'] else 'differ at ' + str(g['first_difference'])}"
                     for g in proof["generations"])
    lines += ["", f"Greedy generations: {gens}.", "",
              "Every weight keeps its shape, so inference costs the same; `python benchmarks/harden_speed.py` "
              "times both models in alternation."]
    return lines


def heel_table(heel: dict) -> list[str]:
    before, after = heel["before"], heel["after"]
    rows = [("largest residual activation / median (layer, channel)",
             f"{_g(before['outliers']['max_ratio'])} ({before['outliers']['layer']}, {before['outliers']['channel']})",
             f"{_g(after['outliers']['max_ratio'])} ({after['outliers']['layer']}, {after['outliers']['channel']})")]
    for b, a in zip(before["masked"], after["masked"]):
        rows.append((f"Delta masking `{b['neuron']}` alone", _g(b["delta"]), _g(a["delta"])))
    for key, label in (("scan", "prefix n* (Stage 1 + 2)"), ("search", "smallest heel `lesion search` finds"),
                       ("fixed_basis", "smallest heel among the MLP's intermediate neurons (gate, up, act), "
                                       "which no rotation moves")):
        if key in before and key in after:
            rows.append((label, _set(before[key]), _set(after[key])))
            rows.append((f"{label}: where", _where(before[key]), _where(after[key])))
        if key == "search" and "original_heel" in after:
            rows.append(("the original's heel above, masked as one set", _g(before["search"]["delta"]),
                         _g(after["original_heel"]["delta"])))
    lines = ["| | original | hardened |", "|---|---|---|"]
    lines += [f"| {a} | {b} | {c} |" for a, b, c in rows]
    return lines


def _set(s: dict) -> str:
    if s.get("same_set"):
        return f"the same {s['n']} neuron{'s' if s['n'] != 1 else ''}: Delta {_g(s['delta'])}"
    if s["reached"]:
        text = f"{s['n']} neuron{'s' if s['n'] != 1 else ''}, Delta {_g(s['delta'])}"
    else:
        best = s.get("best_delta", s["delta"])
        text = f"none within the budget (best Delta {_g(best)})"
    return text + (f", {s['rows']} rows" if s.get("rows") is not None else "")


def _where(s: dict) -> str:
    if not s["reached"] and not s.get("same_set"):
        return "-"
    modules = ", ".join(f"{k} {v}" for k, v in s["where"]["modules"].items())
    layers = ", ".join(s["where"]["layers"])
    return f"{modules}; layers {layers}"


def markdown(record) -> str:
    r = record.rotation
    spread = r.get("spread")
    heads = r.get("heads")
    lines = [f"# Hardened {record.source_model}", "",
             f"Rotation: `{r['method']}`, seed {r['seed']}, residual width {r['hidden_size']}"
             + (f", inside heads too (values/o_proj per head; queries/keys in {heads['queries_keys_layers']} layers' "
                "rotary planes)" if heads else "") + ".",
             f"Source fingerprint `{record.source_fingerprint}`; hardened `{record.hardened_fingerprint}`. "
             f"Embeddings untied: {_g(r['untied_embeddings'])}. max |Q Q^T - I| = {_g(r['orthogonality_error'])}.", ""]
    if spread:
        lines += [f"Channel {spread['channel']} under Q: the largest share of its energy one new channel holds is "
                  f"{_g(spread['top_share'])} (even spread: {_g(spread['uniform_share'])}); max |Q_cj| sqrt(n) = "
                  f"{_g(spread['flatness'])} (1 is perfectly even).", ""]
    for precision, proof in record.proof.items():
        lines += [f"## The function is kept: {precision}", ""] + proof_table(proof) + [""]
    if record.heel:
        lines += ["## The heel before and after", "", f"On the text of SHA-256 `{record.heel['text_sha256'][:16]}`"
                  + (f", budget {record.heel['budget']}" if record.heel.get("budget") else "") + ".", ""]
        lines += heel_table(record.heel) + [""] + verdict(record.heel)
    return "\n".join(lines)


def verdict(heel: dict) -> list[str]:
    """What the table means for the question a user asks: is a small heel left?"""
    fixed = heel["after"].get("fixed_basis")
    if not fixed or not fixed["reached"]:
        return []
    n = fixed["n"]
    return [f"A heel of {n} MLP intermediate neuron{'s' if n != 1 else ''} (Delta {_g(fixed['delta'])} after, "
            f"{_g(heel['before']['fixed_basis']['delta'])} before) survives hardening: no exact rotation moves those "
            f"neurons, so this model's smallest heel has at most {n} neuron{'s' if n != 1 else ''} in any basis.", ""]
