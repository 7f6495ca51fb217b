"""lesion search: screen, greedy selection, pruning and certification, on synthetic objectives
(exact, brute-force checkable) and on a tiny Llama with a planted two-neuron heel."""
from __future__ import annotations

import json
import math
from itertools import combinations

import pytest
import torch
from transformers import AutoConfig, AutoModelForCausalLM

from conftest import COMMON, FAMILIES, char_tokenizer
from lesion.cli import main
from lesion.heel import BudgetExhausted, SearchPlan, SetScorer, find_smallest_heel, search_heel
from lesion.heel.select import first_crossing
from lesion.heel.prune import make_irreducible, prune_elimination
from lesion.model.loading import LoadedModel
from lesion.model.neurons import Neuron
from lesion.results import load_neuron_set

N = [Neuron("m", i) for i in range(40)]


def synthetic(delta_of) -> SetScorer:
    """A scorer whose Delta of a set is ``delta_of(frozenset of channel numbers)``."""
    return SetScorer(lambda sets: [[delta_of(frozenset(n.channel for n in s)) for s in sets]], 1)


def and_pair(s: frozenset) -> float:
    """Channels 3 and 7 together collapse (3.0); alone 0.4 each; channel 1 alone 0.5, a decoy."""
    singles = {1: 0.5, 3: 0.4, 7: 0.4}
    return sum(singles.get(c, 0.01) for c in s) + (2.5 if {3, 7} <= s else 0.0)


def assert_irreducible(score: SetScorer, found, epsilon: float) -> None:
    assert score([found])[0] >= epsilon
    for i in range(len(found)):
        assert score([found[:i] + found[i + 1:]])[0] < epsilon


def test_greedy_finds_an_and_pair_that_no_single_reaches():
    score = synthetic(and_pair)
    heel = find_smallest_heel(score, N, SearchPlan(epsilon=1.0))
    assert heel.reached and sorted(n.channel for n in heel.neurons) == [3, 7]
    assert_irreducible(score, list(heel.neurons), 1.0)
    assert heel.certificate.certified and heel.certificate.best_delta_by_size["1"] < 1.0
    # The decoy that screened best was added first and then pruned away.
    greedy = [t for t in heel.trace if t.stage == "greedy"]
    assert greedy[0].added == "m:1" and len(greedy) == 3


def test_a_single_neuron_stops_the_screen_early():
    score = synthetic(lambda s: 5.0 if 2 in s else 0.0)
    heel = find_smallest_heel(score, N, SearchPlan(epsilon=1.0))
    assert [n.channel for n in heel.neurons] == [2]
    assert heel.screen.screened == 8 and heel.rows == 8  # the first chunk held it
    assert "nothing smaller" in heel.certificate.note


@pytest.mark.parametrize("planted", [(5,), (2, 30), (0, 17, 39), (4, 9, 13, 21, 33)])
def test_elimination_prunes_to_the_planted_set_in_linear_rows(planted):
    needed = frozenset(planted)
    score = synthetic(lambda s: 2.0 if needed <= s else 0.0)
    found = prune_elimination(score, N, 1.0, importance={})
    assert sorted(n.channel for n in found) == sorted(planted)
    assert_irreducible(score, found, 1.0)
    assert score.rows <= 2 * len(N) + len(planted) + 2  # O(n), where best-drop needs O(n^2)


def test_pruned_sets_are_irreducible_by_brute_force():
    """Random non-monotone objectives: whatever elimination keeps, no member can be dropped."""
    gen = torch.Generator().manual_seed(0)
    for _ in range(20):
        weights = torch.rand(12, generator=gen) - 0.3
        pairs = torch.rand(12, 12, generator=gen) - 0.5

        def delta_of(s, w=weights, p=pairs):
            idx = torch.tensor(sorted(s), dtype=torch.long)
            return float(w[idx].sum() + p[idx][:, idx].triu(1).sum())
        score = synthetic(delta_of)
        members = N[:12]
        if score([members])[0] < 1.0:
            continue
        found = prune_elimination(score, members, 1.0, importance={})
        assert_irreducible(score, found, 1.0)


def test_make_irreducible_drops_what_became_dispensable():
    # {0,1,2} >= 1, {0,2} < 1, {1,2} < 1, {0,1} >= 1, {1} >= 1: non-monotone on purpose.
    table = {frozenset({0, 1, 2}): 1.5, frozenset({0, 1}): 1.2, frozenset({1}): 1.1}
    score = synthetic(lambda s: table.get(s, 0.0))
    assert [n.channel for n in make_irreducible(score, N[:3], 1.0)] == [1]


def test_first_crossing_is_exact_on_a_non_monotone_order():
    deltas = {1: 0.2, 2: 0.9, 3: 0.1, 4: 0.3, 5: 1.4, 6: 0.2}
    score = synthetic(lambda s: deltas[len(s)])
    found = first_crossing(score, N[:6], 1.0)
    assert len(found) == 5 and first_crossing(synthetic(lambda s: 0.0), N[:6], 1.0) == []


def test_certificate_finds_a_smaller_set_than_the_irreducible_one():
    singles = {0: 0.9, 1: 0.8, 2: 0.7, 3: 0.2, 4: 0.2}

    def delta_of(s):
        if {3, 4} <= s or {0, 1, 2} <= s:
            return 2.0
        return 0.3 * sum(singles.get(c, 0.0) for c in s)
    score = synthetic(delta_of)
    heel = find_smallest_heel(score, N[:5], SearchPlan(epsilon=1.0))
    assert sorted(n.channel for n in heel.neurons) == [3, 4]
    assert heel.certificate.smaller_set == ("m:3", "m:4")


def test_budget_stops_with_the_best_set_so_far():
    score = SetScorer(lambda sets: [[and_pair(frozenset(n.channel for n in s)) for s in sets]], 1, max_rows=20)
    heel = find_smallest_heel(score, N, SearchPlan(epsilon=1.0, max_rows=20))
    # The budget is spent to the last row; the screen took its share, greedy and pruning the rest.
    assert heel.stopped == "budget" and score.rows == heel.rows == 20
    assert heel.reached and {n.channel for n in heel.neurons} >= {3, 7}
    assert heel.delta == score([list(heel.neurons)])[0] >= 1.0
    assert 8 <= heel.screen.screened < 40 and heel.screen.sizing["screen"] == heel.screen.screened
    assert [s.stage for s in heel.stages] == ["screen", "greedy", "prune"]
    assert "not certified" in heel.certificate.note or "nor certified" in heel.certificate.note


def test_a_tight_budget_takes_narrow_greedy_steps_and_still_finds_the_pair():
    score = SetScorer(lambda sets: [[and_pair(frozenset(n.channel for n in s)) for s in sets]], 1, max_rows=50)
    heel = find_smallest_heel(score, N, SearchPlan(epsilon=1.0, max_rows=50))
    assert heel.stopped == "reached" and sorted(n.channel for n in heel.neurons) == [3, 7] and heel.rows <= 50
    widths = [t.rescreened for t in heel.trace if t.stage == "greedy" and t.rescreened]
    assert widths and max(widths) < 32  # the default rescreen would have spent the budget in one step
    with pytest.raises(BudgetExhausted):
        score([[N[i], N[j]] for i, j in combinations(range(40), 2)])


def test_worst_objective_needs_every_text():
    # Text 0 collapses with channel 1 alone; text 1 only with channel 2 as well.
    score = SetScorer(lambda sets: [[3.0 if 1 in {n.channel for n in s} else 0.0 for s in sets],
                                    [3.0 if {1, 2} <= {n.channel for n in s} else 0.2 for s in sets]], 2)
    heel = find_smallest_heel(score, N[:5], SearchPlan(epsilon=1.0))
    assert sorted(n.channel for n in heel.neurons) == [1, 2]
    mean = SetScorer(score.evaluate, 2, objective="mean")
    assert [n.channel for n in find_smallest_heel(mean, N[:5], SearchPlan(epsilon=1.0)).neurons] == [1]


# --- a real (tiny) model with a planted heel ------------------------------------------------

MASSIVE, READOUT = 5, 9


def planted_and_model() -> torch.nn.Module:
    """Two down_proj channels (layers 0 and 1) each write +1000 into residual channel 5 through
    their bias. The final RMSNorm then shrinks channel 9 (+5 from layer 0), which the LM head
    reads with a weight of 200 for token 0. With one writer masked, channel 5 is still huge and
    little changes; with both masked, channel 9 dominates the norm and token 0 takes every
    prediction: neither neuron alone crosses epsilon, both together do (an AND). Rows 20-23 of
    both down_proj weights are scaled up: noise-sensitive but harmless decoys that the noise
    ranking puts first."""
    config = AutoConfig.for_model("llama", **{**COMMON, **FAMILIES["llama"]}, mlp_bias=True)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config).eval()
    with torch.no_grad():
        for layer in (0, 1):
            model.model.layers[layer].mlp.down_proj.bias[MASSIVE] = 1000.0
        model.model.layers[0].mlp.down_proj.bias[READOUT] = 5.0
        model.lm_head.weight[0, READOUT] = 200.0
        for layer in (0, 1):
            model.model.layers[layer].mlp.down_proj.weight[20:24] *= 30.0
    return model


TEXT = "A quiet morning by the river, with boats drifting past the old stone bridge."
PAIR = {f"model.layers.{layer}.mlp.down_proj:{MASSIVE}" for layer in (0, 1)}


@pytest.fixture(scope="module")
def planted_lm():
    return LoadedModel(planted_and_model(), char_tokenizer(), "planted", "float32")


@pytest.mark.slow
def test_search_finds_the_planted_pair_that_the_prefix_ranks_badly(planted_lm):
    options = dict(noise_options={"samples": 8}, progress=False)
    heel = search_heel(planted_lm, [TEXT], SearchPlan(epsilon=1.0), **options)
    assert heel.reached and {str(n) for n in heel.neurons} == PAIR and heel.delta > 100
    alone = {r.neuron: r.delta for r in heel.screen.top}
    assert all(0 < alone[n] < 1.0 for n in PAIR)
    # The pair is two neurons: each part of the portfolio looked for a single one, and none crossed.
    assert heel.portfolio.found_by == "all"
    assert [p.name for p in heel.portfolio.parts] == ["all", "gate,up,act", "q,k,v", "o,down"]
    assert all(p.ran and p.size == 0 for p in heel.portfolio.parts[1:])
    prefix = search_heel(planted_lm, [TEXT], SearchPlan(epsilon=1.0, strategy="prefix", prune="none"), **options)
    prefix_size = next(s.size for s in prefix.stages if s.stage == "prefix")
    assert prefix_size > 2  # the paper's prefix needs more; the certificate then finds the pair in it
    assert {str(n) for n in prefix.neurons} == PAIR and prefix.certificate.smaller_set


@pytest.mark.parametrize("ablation,expect", [("zero", True), ("mean", False), ("position0", True)])
def test_ablations_on_the_planted_heel(planted_lm, ablation, expect):
    """The planted value is a constant bias at every position: its mean is the value itself, so
    mean ablation removes nothing. Zeroing it at position 0 alone ruins one prediction, by
    a loss of about 1000 nats: enough for the mean over the text, less than everywhere."""
    plan = SearchPlan(epsilon=1.0, ablation=ablation, max_size=8)
    heel = search_heel(planted_lm, [TEXT], plan, signals=["activation"], progress=False)
    assert heel.reached == expect and heel.settings.ablation == ablation
    if expect:
        assert {str(n) for n in heel.neurons} == PAIR
    if ablation == "position0":
        zero = search_heel(planted_lm, [TEXT], SearchPlan(epsilon=1.0, max_size=8), signals=["activation"],
                           progress=False)
        assert 1.0 <= heel.delta < zero.delta / 10


def test_search_cli_writes_a_heel_that_mask_reproduces(tmp_path, capsys):
    folder = tmp_path / "planted"
    planted_and_model().save_pretrained(folder)
    char_tokenizer().save_pretrained(folder)
    out = tmp_path / "heel.json"
    assert main(["search", "--model", str(folder), "--text", TEXT, "--samples", "4", "--quiet",
                 "--out", str(out)]) == 0
    data = json.loads(out.read_text())
    assert set(data["neurons"]) == PAIR and data["rows"] > 0 and "forward_rows" not in data
    assert {s["stage"] for s in data["stages"]} >= {"screen", "greedy", "prune"}
    critical = load_neuron_set(out)  # read as mask --neurons reads it
    capsys.readouterr()
    assert main(["mask", "--model", str(folder), "--text", TEXT, "--neurons", str(out), "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert f"{critical.delta:.4g}" in printed


def test_search_cli_bad_input(tmp_path, refused):
    # all refused before a model loads (none is named: the default one would load)
    for argv, parameter in ((["--epsilon", "nan"], "epsilon"), (["--signals", "noize"], "signals"),
                            (["--pool", "0"], "per_signal"), (["--transfer"], "texts"),
                            (["--max-rows", "0"], "max_rows")):
        refused(["search", "--out", str(tmp_path / "h.json"), *argv], parameter)
    assert not (tmp_path / "h.json").exists()


def test_mean_ablation_rows_equal_setting_each_mean(planted_lm):
    """Batched mean ablation (one set per row) = overwriting each set's neurons with their means."""
    from lesion.masking.ablation import channel_means, masked_nll
    from lesion.masking.masks import set_neurons
    from lesion.masking.metrics import mean_nll
    from lesion.model.neurons import discover_sites
    from lesion.texts.text import encode

    model, ids = planted_lm.model, encode(planted_lm.tokenizer, TEXT)
    index = discover_sites(model)
    sets = [[Neuron("model.layers.0.mlp.up_proj", 3)],
            [Neuron("model.layers.1.mlp.down_proj", 5), Neuron("model.layers.0.self_attn.o_proj", 2)]]
    means = channel_means(model, ids, index, [n.module for s in sets for n in s])
    batched = masked_nll(model, ids, index, sets, ablation="mean")
    for s, value in zip(sets, batched):
        with set_neurons(model, index, {n: float(means[n.module][n.channel]) for n in s}):
            assert value == pytest.approx(mean_nll(model, ids).item(), rel=1e-5)


def test_no_heel_is_reported_with_the_best_single_and_pair():
    score = synthetic(lambda s: 0.1 * len(s) if len(s) <= 2 else 0.0)
    heel = find_smallest_heel(score, N[:10], SearchPlan(epsilon=1.0, max_size=5))
    # Not reached: the best set evaluated is kept, with its finite Delta, never [] / -inf.
    assert not heel.reached and heel.stopped == "not reached" and len(heel.neurons) == 2
    assert heel.delta == pytest.approx(0.2)
    best = heel.certificate.best_delta_by_size
    assert best["1"] == pytest.approx(0.1) and best["2"] == pytest.approx(0.2)
    assert "best pair" in heel.certificate.note


def test_transfer_table_applies_every_heel_to_every_text(planted_lm):
    from lesion.heel import search_with_transfer
    other = "Every evening the lamps along the harbour wall were lit one after another."
    heel = search_with_transfer(planted_lm, [TEXT, other], ["river", "harbour"], SearchPlan(epsilon=1.0),
                                signals=["activation", "attribution"], progress=False)
    rows = heel.transfer.rows
    assert set(rows) == {"joint", "own:river", "own:harbour"} and heel.transfer.texts == ("river", "harbour")
    assert all(len(r.deltas) == 2 for r in rows.values())
    # The planted pair collapses both texts, so the joint heel is the pair, and worst = min over texts.
    assert set(rows["joint"].neurons) == PAIR and heel.delta == pytest.approx(min(rows["joint"].deltas))
    assert [t.delta for t in heel.texts] == pytest.approx(rows["joint"].deltas)


def test_search_interrupted_writes_nothing(tmp_path, monkeypatch, capsys):
    import lesion.masking.ablation
    folder = tmp_path / "planted"
    model = planted_and_model()
    model.save_pretrained(folder)
    char_tokenizer().save_pretrained(folder)
    seen = []

    def interrupt(fn, items):
        seen.append(fn)
        raise KeyboardInterrupt
    monkeypatch.setattr(lesion.masking.ablation, "split_on_oom", interrupt)
    out = tmp_path / "heel.json"
    assert main(["search", "--model", str(folder), "--text", TEXT, "--samples", "4", "--quiet",
                 "--out", str(out)]) == 130
    assert seen and not out.exists() and "interrupted" in capsys.readouterr().err


def test_interrupted_search_leaves_the_model_as_it_was(planted_lm, monkeypatch):
    import lesion.masking.ablation
    from lesion.masking.metrics import mean_nll
    from lesion.texts.text import encode
    ids = encode(planted_lm.tokenizer, TEXT)
    before = mean_nll(planted_lm.model, ids).item()
    calls = []

    def interrupt_second(fn, items):
        calls.append(len(items))
        if len(calls) == 2:
            raise KeyboardInterrupt
        return fn(items)
    monkeypatch.setattr(lesion.masking.ablation, "split_on_oom", interrupt_second)
    heel = search_heel(planted_lm, [TEXT], SearchPlan(epsilon=1.0), signals=["activation"], progress=False)
    # The first batch was scored before the interrupt: its best set is the answer.
    assert heel.stopped == "interrupted" and heel.neurons and math.isfinite(heel.delta)
    assert not any(m._forward_hooks for m in planted_lm.model.modules())
    assert mean_nll(planted_lm.model, ids).item() == before


# --- the portfolio: restricted sub-searches on one scorer -----------------------------------

def lured(s: frozenset) -> float:
    """Decoys 0-4 add 0.3 each (four of them cross 1.0); channels 33 and 37 alone 0.05 each, together 3.0:
    greedy over the whole pool takes the decoys first and never pairs 33 with 37."""
    return sum(0.3 if c < 5 else 0.05 if c in (33, 37) else 0.01 for c in s) + (3.0 if {33, 37} <= s else 0.0)


def test_a_restricted_part_finds_the_smaller_heel_the_whole_search_missed():
    from lesion.heel.plan import PortfolioPart
    score = synthetic(lured)
    parts = [PortfolioPart("deep", tuple(N[25:40])), PortfolioPart("never", tuple(N[5:10]))]
    heel = find_smallest_heel(score, N[:30], SearchPlan(epsilon=1.0), parts=parts)
    assert heel.reached and sorted(n.channel for n in heel.neurons) == [33, 37]
    assert_irreducible(score, list(heel.neurons), 1.0)
    record = heel.portfolio
    assert record.found_by == "deep"
    whole, deep, never = record.parts
    assert whole.name == "all" and whole.size == 4 and whole.reached
    assert deep.ran and deep.size == 2 and deep.pool == 15
    # After the pair only a single could be smaller: "never" still runs (its singles, screened by the whole
    # search, cost nothing again), and nothing of it crosses.
    assert never.ran and never.size == 0 and not never.reached and never.rows < 15
    # One budget: every row any part ran is counted once, and no set was evaluated twice.
    assert heel.rows == score.rows == len(score.known)
    assert sum(p.rows for p in (whole, deep, never)) + heel.certificate.rows == heel.rows
    assert {s.stage for s in heel.stages} >= {"screen", "greedy", "prune", "deep: screen", "deep: greedy"}
    assert {t.part for t in heel.trace} == {None, "deep", "never"}
    again = find_smallest_heel(synthetic(lured), N[:30], SearchPlan(epsilon=1.0), parts=parts)
    assert again.neurons == heel.neurons and again.trace == heel.trace  # deterministic


def test_parts_do_not_run_when_the_heel_is_one_neuron_and_share_the_row_budget():
    from lesion.heel.plan import PortfolioPart
    parts = [PortfolioPart("deep", tuple(N[25:40]))]
    one = find_smallest_heel(synthetic(lambda s: 5.0 if 2 in s else 0.0), N, SearchPlan(epsilon=1.0), parts=parts)
    assert one.rows == 8 and one.portfolio.parts[1].to_dict() == {
        "name": "deep", "pool": 15, "ran": False, "why": "the heel is one neuron: nothing smaller exists"}
    score = SetScorer(lambda sets: [[lured(frozenset(n.channel for n in s)) for s in sets]], 1, max_rows=120)
    heel = find_smallest_heel(score, N[:30], SearchPlan(epsilon=1.0, max_rows=120), parts=parts)
    assert score.rows <= 120 and heel.rows == score.rows
    whole, deep = heel.portfolio.parts
    assert deep.ran and deep.rows <= (120 - whole.rows) * 2 // 3 + 1  # at most two thirds of what was left


def test_a_part_pool_is_the_pool_of_the_search_restricted_to_its_components(planted_lm):
    """The parts' pools filter the signals' scores of every neuron: no forward, and the same pool
    ``--components NAME`` builds, since every signal scores each neuron on its own."""
    from lesion.heel.signals import candidate_pool, portfolio_pools, signal_scores, top_neurons
    from lesion.model.neurons import discover_sites
    from lesion.texts.text import encode
    model, ids = planted_lm.model, encode(planted_lm.tokenizer, TEXT)
    whole = discover_sites(model)
    names = ("activation", "massive", "superweight", "attribution")
    pools = dict(portfolio_pools(whole, {n: [signal_scores(n, model, ids, whole)] for n in names}, 6))
    assert list(pools) == ["gate,up,act", "q,k,v", "o,down"]
    for name, pool in pools.items():
        part = discover_sites(model, name)
        alone = candidate_pool({n: [top_neurons(part, signal_scores(n, model, ids, part), 6)] for n in names})[0]
        assert pool == alone and {whole.site(n).kind for n in pool} <= set(name.split(","))


def test_after_a_pair_the_last_part_screens_its_whole_pool_with_every_row_left():
    """Only a single neuron can beat a pair: the part's screen, not a share of it, is what pays."""
    from lesion.heel.plan import PortfolioPart

    def late_single(s: frozenset) -> float:
        return 5.0 if 39 in s else and_pair(s)  # channel 39 is the last of the part's 30
    score = SetScorer(lambda sets: [[late_single(frozenset(n.channel for n in s)) for s in sets]], 1, max_rows=60)
    heel = find_smallest_heel(score, N[:10], SearchPlan(epsilon=1.0, max_rows=60),
                              parts=[PortfolioPart("wide", tuple(N[10:40]))])
    whole, wide = heel.portfolio.parts
    assert whole.size == 2 and 60 - whole.rows >= 30  # the pair, with the rows for 30 singles left
    assert [n.channel for n in heel.neurons] == [39] and heel.portfolio.found_by == "wide"
    assert wide.screened == 30 and wide.rows == 30 and heel.rows <= 60
