"""Claims as data and the early-signal ranking (radam_repro/report/claims.py, signals.py).

Predicates run on hand-made run tables (Run objects with known outcomes, grouped by the report's own aggregate);
the bootstrap against a synthetic truth; the AUC against a brute-force pairwise count; the CLI on real tiny runs.
"""

from __future__ import annotations

import csv
import math
import statistics
from pathlib import Path

import matplotlib.image
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from radam_repro.report.__main__ import main as report_main
from radam_repro.report.aggregate import aggregate
from radam_repro.report.archive import main as archive_main
from radam_repro.report.claims import (
    CLAIMS_YAML,
    FAILS,
    HOLDS,
    INCONCLUSIVE,
    NO_RUNS,
    NOT_MEASURED,
    Z,
    _prediction,
    evaluate,
    evaluate_claims,
    load_claims,
    seeds_needed,
    write_claims,
)
from radam_repro.report.runs import Run, load_runs
from radam_repro.report.signals import auc, early_values, rank_signals
from radam_repro.report.tables import Solved

SOLVED = Solved.parse("valid/loss<0.1")
LN32 = math.log(32)


def make_run(
    variant: str, seed: int, final_loss: float, *, lr: float = 3e-3, status: str = "completed", **early
) -> Run:
    """A run as the report reads it: config, summary (final valid/loss, 100 planned updates) and train rows whose
    early window (steps <= 10) holds ``early`` and whose later rows hold a value that must not count."""
    config = {"optimizer": {"name": variant, "lr": lr}, "task": {"name": "nmt_synthetic"}, "seed": seed}
    final = {"valid/loss": final_loss} if status == "completed" else {}
    summary = {"status": status, "final": final, "step": 100, "total_steps": 100}
    rows = [{"step": s, "split": "train", "lr": lr, **early} for s in (1, 5, 10)]
    rows.append({"step": 50, "split": "train", **{k: 1e9 for k in early}})
    return Run(Path(f"/runs/{variant},lr={lr},seed={seed}"), config, summary, rows, status)


def runs_of(variant: str, losses: list[float], **kwargs) -> list[Run]:
    return [make_run(variant, seed, loss, **kwargs) for seed, loss in enumerate(losses, 1)]


def predict(**raw):
    return _prediction(raw, "test")


def verdict_of(prediction, runs: list[Run]) -> tuple[str, list]:
    return evaluate(prediction, aggregate(runs), SOLVED)


SOLVES, FAILS_ = 0.01, 3.0  # final valid losses of a solved and a failed run


def test_solved_fraction_holds_does_not_hold_and_is_inconclusive():
    greater = predict(stat="solved_fraction", a={"variant": "adam_warmup"}, b={"variant": "adam"}, relation=">")
    verdict, (cell,) = verdict_of(greater, runs_of("adam_warmup", [SOLVES] * 5) + runs_of("adam", [FAILS_] * 5))
    assert verdict == HOLDS and (cell.a, cell.b, cell.effect, cell.low, cell.high) == (1.0, 0.0, 1.0, 1.0, 1.0)
    verdict, (cell,) = verdict_of(greater, runs_of("adam_warmup", [FAILS_] * 5) + runs_of("adam", [SOLVES] * 5))
    assert verdict == FAILS and cell.effect == -1.0
    # 3/5 against 2/5: the interval straddles 0, and more seeds are asked for
    mixed = runs_of("adam_warmup", [SOLVES] * 3 + [FAILS_] * 2) + runs_of("adam", [SOLVES] * 2 + [FAILS_] * 3)
    verdict, (cell,) = verdict_of(greater, mixed)
    assert verdict == INCONCLUSIVE and cell.low < 0 < cell.high and cell.effect == pytest.approx(0.2)
    assert cell.seeds_needed > 5
    # diverged and failed runs are not solved, as in the report's solved column
    broken = [make_run("adam", 1, 0, status="diverged"), make_run("adam", 2, 0, status="failed")]
    verdict, (cell,) = verdict_of(greater, runs_of("adam_warmup", [SOLVES] * 2) + broken)
    assert verdict == HOLDS and cell.b == 0.0


def test_equal_within_a_margin():
    equal = predict(
        stat="solved_fraction", a={"variant": "adam_untuned_linear"}, b={"variant": "radam"}, relation="=", margin=0.25
    )
    verdict, _ = verdict_of(equal, runs_of("adam_untuned_linear", [SOLVES] * 3) + runs_of("radam", [SOLVES] * 3))
    assert verdict == HOLDS
    verdict, _ = verdict_of(equal, runs_of("adam_untuned_linear", [SOLVES] * 3) + runs_of("radam", [FAILS_] * 3))
    assert verdict == FAILS
    verdict, (cell,) = verdict_of(
        equal, runs_of("adam_untuned_linear", [SOLVES] * 3) + runs_of("radam", [SOLVES, SOLVES, FAILS_])
    )
    assert verdict == INCONCLUSIVE and cell.seeds_needed is not None


def test_final_metric_less_than():
    less = predict(stat="final:valid/loss", a={"variant": "adam_warmup"}, b={"variant": "adam_eps"}, relation="<")
    low, high = [0.01, 0.012, 0.011, 0.009], [2.0, 2.5, 2.2, 2.9]
    verdict, (cell,) = verdict_of(less, runs_of("adam_warmup", low) + runs_of("adam_eps", high))
    assert verdict == HOLDS and cell.a == pytest.approx(statistics.fmean(low))
    assert cell.effect == pytest.approx(statistics.fmean(low) - statistics.fmean(high)) and cell.high < 0
    verdict, _ = verdict_of(less, runs_of("adam_warmup", high) + runs_of("adam_eps", low))
    assert verdict == FAILS
    verdict, _ = verdict_of(less, runs_of("adam_warmup", [0.01, 2.9, 0.02, 2.5]) + runs_of("adam_eps", high))
    assert verdict == INCONCLUSIVE
    # a diverged run has no final loss: it is left out, not averaged
    verdict, (cell,) = verdict_of(
        less, runs_of("adam_warmup", low) + runs_of("adam_eps", high) + [make_run("adam_eps", 9, 0, status="diverged")]
    )
    assert cell.n_b == 4


def test_early_metric_reads_only_the_first_tenth_of_updates():
    key = "adaptive_lr/log10_var_mean"
    larger = predict(stat=f"early:{key}", a={"variant": "adam"}, b={"variant": "adam_warmup"}, relation=">")
    runs = [make_run("adam", s, FAILS_, **{key: 8.0 + s / 10}) for s in (1, 2, 3)]
    runs += [make_run("adam_warmup", s, SOLVES, **{key: 5.5 + s / 10}) for s in (1, 2, 3)]
    verdict, (cell,) = verdict_of(larger, runs)
    assert verdict == HOLDS and cell.a == pytest.approx(8.2) and cell.b == pytest.approx(5.7)  # step 50's 1e9 ignored
    smaller = predict(stat=f"early:{key}", a={"variant": "adam"}, b={"variant": "adam_warmup"}, relation="<")
    assert verdict_of(smaller, runs)[0] == FAILS
    close = [
        make_run(v, s, SOLVES, **{key: 6.0 + (s % 2) + (v == "adam") / 10})
        for v in ("adam", "adam_warmup")
        for s in range(4)
    ]
    assert verdict_of(larger, close)[0] == INCONCLUSIVE
    verdict, (cell,) = verdict_of(predict(stat="early:update/relative", a={}, b={}, relation=">"), runs)
    assert verdict == NOT_MEASURED


def test_cells_at_every_lr_or_at_some_lr():
    """lr 1e-3: both solve; lr 3e-3: only the warmup does."""
    runs = runs_of("adam_warmup", [SOLVES] * 3, lr=1e-3) + runs_of("adam", [SOLVES] * 3, lr=1e-3)
    runs += runs_of("adam_warmup", [SOLVES] * 3, lr=3e-3) + runs_of("adam", [FAILS_] * 3, lr=3e-3)
    raw = dict(stat="solved_fraction", a={"variant": "adam_warmup"}, b={"variant": "adam"}, relation=">")
    verdict, cells = verdict_of(predict(**raw, by=["optimizer.lr"]), runs)
    assert verdict == FAILS and [c.verdict for c in cells] == [FAILS, HOLDS]
    assert [c.where for c in cells] == ["lr=0.001", "lr=0.003"]
    assert verdict_of(predict(**raw, by=["optimizer.lr"], across="any"), runs)[0] == HOLDS
    (cell,) = verdict_of(predict(**raw), runs)[1]  # pooled: 6/6 against 3/6
    assert cell.where == "pooled" and cell.effect == 0.5


def test_each_splits_side_a_and_where_matches_list_values():
    """Each RAdam beta2 (a list in config.yaml) against the one Adam baseline; ``where`` picks one beta2."""

    def radam(betas, losses):
        runs = runs_of("radam", losses)
        for r in runs:
            r.config["optimizer"]["betas"] = list(betas)
        return runs

    runs = radam((0.9, 0.8), [FAILS_] * 3) + radam((0.9, 0.931), [SOLVES] * 3) + runs_of("adam", [FAILS_] * 3)
    raw = dict(stat="solved_fraction", b={"variant": "adam"}, relation=">")
    verdict, cells = verdict_of(predict(**raw, a={"variant": "radam"}, each=["optimizer.betas"]), runs)
    assert [(c.where, c.verdict) for c in cells] == [("betas=(0.9, 0.8)", FAILS), ("betas=(0.9, 0.931)", HOLDS)]
    assert verdict == FAILS
    picked = predict(**raw, a={"variant": "radam", "where": {"optimizer.betas": [0.9, 0.931]}})
    assert verdict_of(picked, runs)[0] == HOLDS


def test_outcome_selector_compares_failed_with_solved_runs():
    key = "update/relative"
    runs = [make_run("adam", s, FAILS_, **{key: 0.5 + s / 100}) for s in range(4)]
    runs += [make_run("adam", 10 + s, SOLVES, **{key: 0.1 + s / 100}) for s in range(4)]
    p = predict(stat=f"early:{key}", a={"outcome": "failed"}, b={"outcome": "solved"}, relation=">")
    verdict, (cell,) = verdict_of(p, runs)
    assert verdict == HOLDS and (cell.n_a, cell.n_b) == (4, 4)
    # one failed and one solved run in each of 6 groups: the single values are resampled together, not "one seed"
    split = [make_run(f"v{i}", 1, FAILS_, **{key: 0.5 + i / 100}) for i in range(6)]
    split += [make_run(f"v{i}", 2, SOLVES, **{key: 0.1 + i / 100}) for i in range(6)]
    verdict, (cell,) = verdict_of(p, split)
    assert verdict == HOLDS and (cell.n_a, cell.n_b) == (6, 6) and not cell.note and cell.low < cell.high


def test_lr_sensitivity_is_wortsmans_number():
    """E_lr[min(l(lr), l_0) - min_lr l(lr)], a diverged run counted as l_0, by hand."""
    lrs = (1e-3, 3e-3, 1e-2)
    warm = {1e-3: [0.01, 0.02], 3e-3: [0.01, 0.03], 1e-2: [0.2, 0.4]}
    vanilla = {1e-3: [0.02, 0.02], 3e-3: [2.0, 5.0], 1e-2: [None, None]}  # 5.0 is capped at l_0, None diverged
    runs = [make_run("adam_warmup", s, v, lr=lr) for lr in lrs for s, v in enumerate(warm[lr], 1)]
    runs += [
        make_run("adam", s, v, lr=lr) if v is not None else make_run("adam", s, 0, lr=lr, status="diverged")
        for lr in lrs
        for s, v in enumerate(vanilla[lr], 1)
    ]

    def sensitivity(table):
        means = [statistics.fmean(LN32 if v is None else min(v, LN32) for v in table[lr]) for lr in lrs]
        return statistics.fmean(m - min(means) for m in means)

    p = predict(
        stat="lr_sensitivity:valid/loss", a={"variant": "adam_warmup"}, b={"variant": "adam"}, relation="<",
        at_init=LN32,
    )  # fmt: skip
    verdict, (cell,) = verdict_of(p, runs)
    assert cell.a == pytest.approx(sensitivity(warm)) and cell.b == pytest.approx(sensitivity(vanilla))
    assert verdict == HOLDS
    reverse = predict(
        stat="lr_sensitivity:valid/loss", a={"variant": "adam"}, b={"variant": "adam_warmup"}, relation="<",
        at_init=LN32,
    )  # fmt: skip
    assert verdict_of(reverse, runs)[0] == FAILS
    one_lr = [r for r in runs if r.config["optimizer"]["lr"] == 1e-3]
    assert verdict_of(p, one_lr)[0] == NO_RUNS


def make_cifar_run(variant: str, seed: int, lr: float, acc: float | None) -> Run:
    """A CIFAR run with a final and a best test accuracy (best = final + 1); acc None: the run diverged."""
    config = {"optimizer": {"name": variant, "lr": lr}, "task": {"name": "cifar10"}, "seed": seed}
    if acc is None:
        return Run(Path(f"/runs/{variant},lr={lr},seed={seed}"), config, {"status": "diverged"}, [], "diverged")
    summary = {"status": "completed", "final": {"test/acc": acc}, "best": {"test/acc": acc + 1}, "step": 8}
    return Run(Path(f"/runs/{variant},lr={lr},seed={seed}"), config, summary, [], "completed")


def test_lr_sensitivity_of_a_score_and_best_values_and_diverged_runs_at_init():
    """For an accuracy: E_lr[max_lr a(lr) - max(a(lr), a_0)], a diverged run counted as chance (a_0 = 10);
    ``best:`` reads the summary's best values; with ``at_init`` a diverged run counts as a_0 in ``final:`` too."""
    lrs = (0.1, 0.01, 0.001)
    robust = {0.1: [60.0, 62.0], 0.01: [63.0, 61.0], 0.001: [59.0, 58.0]}
    fragile = {0.1: [None, 5.0], 0.01: [64.0, 60.0], 0.001: [40.0, 44.0]}  # 5.0 is below chance: counted as 10
    runs = [make_cifar_run("radam", s, lr, v) for lr in lrs for s, v in enumerate(robust[lr], 1)]
    runs += [make_cifar_run("adam", s, lr, v) for lr in lrs for s, v in enumerate(fragile[lr], 1)]

    def sensitivity(table):
        means = [statistics.fmean(10.0 if v is None else max(v, 10.0) for v in table[lr]) for lr in lrs]
        return statistics.fmean(max(means) - m for m in means)

    p = predict(stat="lr_sensitivity:test/acc", a={"variant": "radam"}, b={"variant": "adam"}, relation="<", at_init=10)
    verdict, (cell,) = verdict_of(p, runs)
    assert cell.a == pytest.approx(sensitivity(robust)) and cell.b == pytest.approx(sensitivity(fragile))
    assert verdict == HOLDS and sensitivity(fragile) > 10
    best = predict(stat="best:test/acc", a={"variant": "radam", "where": {"optimizer.lr": 0.1}},
                   b={"variant": "adam", "where": {"optimizer.lr": 0.1}}, relation=">", at_init=10)  # fmt: skip
    (cell,) = verdict_of(best, runs)[1]
    assert (cell.a, cell.b, cell.n_b) == (62.0, statistics.fmean([10.0, 6.0]), 2)  # best = final + 1; diverged: 10
    final = predict(stat="final:test/acc", a={"variant": "radam", "where": {"optimizer.lr": 0.1}},
                    b={"variant": "adam", "where": {"optimizer.lr": 0.1}}, relation=">")  # fmt: skip
    (cell,) = verdict_of(final, runs)[1]
    assert (cell.b, cell.n_b) == (5.0, 1)  # without at_init the diverged run has no value


def test_claim_where_paper_and_scale_and_claims_without_a_solved_criterion(tmp_path):
    """A claim's ``where`` scopes all its predictions; ``paper``/``scale`` reach the verdict table; without a solved
    criterion a solved_fraction prediction is not measured while a final-metric one is evaluated."""
    path = tmp_path / "claims.yaml"
    path.write_text(
        """claims:
  - id: real
    source: {paper: P, year: 2019}
    claim: c
    paper: "BLEU 34.76 vs 34.66"
    scale: "tiny model"
    experiment: e
    where: {task.name: cifar10, optimizer.lr: 0.1}
    predictions:
      - {stat: "final:test/acc", a: {variant: radam}, b: {variant: adam}, relation: ">"}
      - {stat: solved_fraction, a: {variant: radam}, b: {variant: adam}, relation: ">"}
"""
    )
    (claim,), _ = load_claims(path)
    assert claim.paper == "BLEU 34.76 vs 34.66" and claim.scale == "tiny model"
    assert claim.predictions[0].a.where == {"task.name": "cifar10", "optimizer.lr": 0.1}
    runs = [make_cifar_run("radam", s, lr, 70.0 + s) for lr in (0.1, 0.01) for s in (1, 2, 3)]
    runs += [make_cifar_run("adam", s, lr, 50.0 + s if lr == 0.1 else 90.0) for lr in (0.1, 0.01) for s in (1, 2, 3)]
    (verdict,) = evaluate_claims([claim], aggregate(runs), None)
    (_, final_verdict, (cell,)), (_, solved_verdict, _) = verdict.predictions
    assert final_verdict == HOLDS and cell.effect == pytest.approx(20.0)  # at lr 0.1 only (at 0.01 Adam is ahead)
    assert solved_verdict == NOT_MEASURED and verdict.verdict.startswith(HOLDS)
    write_claims([verdict], tmp_path, None)
    table = (tmp_path / "claims.md").read_text()
    assert "| BLEU 34.76 vs 34.66 |" in table and "| tiny model |" in table and "+20 [" in table
    assert "| c (task.name=cifar10, lr=0.1) |" in table and "| radam 72 vs adam 52: +20 [" in table
    path.write_text(path.read_text().replace("    scale:", "    scope: x\n    scale:"))
    with pytest.raises(ValueError, match=r"unknown keys \['scope'\]; a claim also takes where, paper, scale"):
        load_claims(path)


def test_missing_runs_and_single_seeds():
    p = predict(stat="solved_fraction", a={"variant": "adam_gi"}, b={"variant": "adam"}, relation="=", margin=0.25)
    verdict, (cell,) = verdict_of(p, runs_of("adam", [FAILS_] * 3))
    assert verdict == NO_RUNS and "adam_gi" in cell.note
    greater = predict(stat="solved_fraction", a={"variant": "adam_warmup"}, b={"variant": "adam"}, relation=">")
    verdict, (cell,) = verdict_of(greater, runs_of("adam_warmup", [SOLVES]) + runs_of("adam", [FAILS_]))
    assert verdict == INCONCLUSIVE and "one seed" in cell.note


def write_two_claims(tmp_path: Path, measured: str) -> tuple[list, str]:
    """claims.md of two claims, ``measured`` (its one prediction, adam_warmup against adam, has runs here) and
    ``elsewhere`` (GI-Adam, made by another experiment: no runs here); returns the claims and the table."""
    path = tmp_path / "claims.yaml"
    path.write_text(
        f"""claims:
  - id: measured
    source: {{paper: P, year: 2019}}
    claim: warmup helps
    experiment: demo
    predictions:
      - {measured}
  - id: elsewhere
    source: {{paper: Q, year: 2024}}
    claim: gi solves
    experiment: warmup_mechanisms
    predictions:
      - {{stat: solved_fraction, a: {{variant: adam_gi}}, b: {{variant: adam}}, relation: ">"}}
"""
    )
    claims, _ = load_claims(path)
    runs = runs_of("adam_warmup", [SOLVES] * 3) + runs_of("adam", [FAILS_] * 3)
    write_claims(evaluate_claims(claims, aggregate(runs), SOLVED), tmp_path, SOLVED)
    return claims, (tmp_path / "claims.md").read_text()


def test_claims_md_lists_claims_without_runs_in_one_line_and_the_csv_keeps_them(tmp_path):
    """A study's claims.md judges the claims its runs bear on; one with no run here is named (with the experiment
    that makes its runs) but gets no table row, while claims.csv keeps every comparison of every claim."""
    solved = '{stat: solved_fraction, a: {variant: adam_warmup}, b: {variant: adam}, relation: ">"}'
    claims, table = write_two_claims(tmp_path, solved)
    assert "| measured |" in table and "| elsewhere |" not in table and NO_RUNS not in table.replace("No runs", "")
    assert "No runs here for: `elsewhere` (`warmup_mechanisms`)." in table
    assert f"predictions over run groups (solved: final `{SOLVED}`). Effect" in table
    with (tmp_path / "claims.csv").open() as f:
        rows = {r["claim"]: r["claim_verdict"] for r in csv.DictReader(f)}
    assert rows == {"measured": HOLDS, "elsewhere": NO_RUNS}
    write_claims(evaluate_claims(claims, aggregate([]), SOLVED), tmp_path, SOLVED)
    assert "No claim has runs in these folders." in (tmp_path / "claims.md").read_text()


def test_claims_md_names_the_solved_criterion_only_where_a_shown_prediction_uses_it(tmp_path):
    """A study whose claims compare final values (BLEU, accuracy) says nothing of a solved criterion it never used."""
    final = '{stat: "final:valid/loss", a: {variant: adam_warmup}, b: {variant: adam}, relation: "<"}'
    _, table = write_two_claims(tmp_path, final)
    assert "| measured |" in table and "`elsewhere`" in table
    assert "predictions over run groups. Effect" in table and "solved:" not in table


def test_bootstrap_is_deterministic_and_covers_the_true_effect():
    """Normal final losses with a known difference of means: the 95 % interval covers it in about 95 % of
    datasets, and the same data give the same interval to the last bit."""
    less = predict(stat="final:valid/loss", a={"variant": "radam"}, b={"variant": "adam"}, relation="<")
    rng = np.random.default_rng(12345)
    covered = []
    for _ in range(40):
        runs = runs_of("radam", list(rng.normal(1.0, 0.5, 20))) + runs_of("adam", list(rng.normal(1.5, 0.5, 20)))
        (cell,) = verdict_of(less, runs)[1]
        covered.append(cell.low <= -0.5 <= cell.high)
    assert sum(covered) >= 34  # binomial(40, 0.95): P(< 34) ~ 0.5 %
    (again,) = verdict_of(less, runs)[1]
    assert (again.low, again.high) == (cell.low, cell.high)


def test_seeds_needed_is_the_two_sample_formula():
    """With the bootstrap's SE at n_0 seeds: n = ceil(n_0 (z SE / d)^2) ~ z^2 (s_A^2 + s_B^2) / d^2."""
    greater = predict(stat="solved_fraction", a={}, b={}, relation=">")
    assert seeds_needed(0.5, 0.5, 4, greater) == math.ceil(4 * Z**2)
    assert seeds_needed(0.0, 0.5, 4, greater) is None  # no effect: no number of seeds decides it
    less = predict(stat="final:valid/loss", a={"variant": "radam"}, b={"variant": "adam"}, relation="<")
    a, b = [1.0, 1.4, 0.6, 1.2, 0.8, 1.1], [1.3, 0.9, 1.7, 1.1, 1.5, 1.2]
    (cell,) = verdict_of(less, runs_of("radam", a) + runs_of("adam", b))[1]
    d = statistics.fmean(b) - statistics.fmean(a)
    textbook = Z**2 * (statistics.variance(a) + statistics.variance(b)) / d**2
    assert cell.verdict == INCONCLUSIVE and cell.seeds_needed == pytest.approx(textbook, rel=0.25)


def test_shipped_claims_file_loads_and_bad_entries_name_the_fix(tmp_path, capsys):
    claims, solved = load_claims(CLAIMS_YAML)
    assert str(solved) == "valid/loss<0.1"
    ids = {c.id for c in claims}
    assert {"liu2019_vanilla_fails", "liu2019_adam_eps_not_a_fix", "wortsman2023_lr_sensitivity"} <= ids
    assert all(c.source.get("arxiv") and c.predictions for c in claims)
    bad = tmp_path / "claims.yaml"
    bad.write_text(
        "claims:\n  - {id: x, source: {}, claim: c, experiment: e, predictions: [{stat: mean, a: {}, b: {}}]}\n"
    )
    with pytest.raises(ValueError, match="use solved_fraction, final:<metric>"):
        load_claims(bad)
    bad.write_text(
        "claims:\n  - {id: x, source: {}, claim: c, experiment: e, predictions: [{stat: solved_fraction, a: {}, b: {}, relation: '>='}]}\n"
    )
    with pytest.raises(ValueError, match="relation='>='; use one of"):
        load_claims(bad)
    bad.write_text("claims:\n  - {id: x, claim: c}\n")
    with pytest.raises(ValueError, match="needs the fields"):
        load_claims(bad)
    bad.write_text("claims: [\n")
    with pytest.raises(ValueError, match="is not YAML"):
        load_claims(bad)
    bad.write_text(
        "claims:\n  - {id: x, source: {}, claim: c, experiment: e, predictions: [{stat: solved_fraction, a: {}, b: {}, relation: '>='}]}\n"
    )
    with pytest.raises(SystemExit):  # the CLI names the problem without a traceback, before reading any run
        report_main([str(tmp_path), "--claims", str(bad)])
    assert "relation='>='; use one of >, <, =" in capsys.readouterr().err


# -- AUC and the early-signal ranking --------------------------------------------------------------
def brute_force_auc(x, y) -> float:
    return sum((a > b) + 0.5 * (a == b) for a in x for b in y) / (len(x) * len(y))


@given(
    st.lists(st.integers(-5, 5), min_size=1, max_size=30),
    st.lists(st.integers(-5, 5), min_size=1, max_size=30),
)
def test_auc_equals_the_pairwise_count_ties_counting_half(x, y):
    assert auc(np.array(x), np.array(y)) == pytest.approx(brute_force_auc(x, y), abs=1e-12)


def test_auc_on_random_separable_and_identical_data():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=37), rng.normal(0.3, 1, size=23)
    assert auc(x, y) == pytest.approx(brute_force_auc(x, y), abs=1e-12)
    assert auc(x + 100, y) == 1.0 and auc(x - 100, y) == 0.0
    assert auc(x, x) == 0.5 and auc(np.ones(5), np.ones(9)) == 0.5


def test_rank_signals_puts_the_separating_signal_first():
    rng = np.random.default_rng(1)
    runs = [make_run("adam", s, FAILS_, grad_norm=5 + s, loss=float(rng.normal())) for s in range(6)]
    runs += [make_run("adam_warmup", s, SOLVES, grad_norm=1 + s / 10, loss=float(rng.normal())) for s in range(6)]
    runs.append(make_run("adam", 99, 0, status="failed", grad_norm=0.0))  # a crash has no outcome: left out
    ranked = rank_signals(runs, SOLVED)
    assert [s.signal for s in ranked] == ["grad_norm", "loss"]  # lr is the config's, not a measurement
    first = ranked[0]
    assert (first.auc, first.failed, first.solved, first.low, first.high) == (1.0, 6, 6, 1.0, 1.0)
    assert ranked == rank_signals(runs, SOLVED)
    assert early_values(runs[0]) == {"grad_norm": 5.0, "loss": runs[0].rows[0]["loss"]}


def test_per_layer_update_sizes_enter_the_ranking_through_their_summaries():
    early = {"update/relative": 0.1, "update/relative_max": 0.3, "update/relative/0.weight": 0.3}
    early |= {"update/angle": 0.01, "update/angle_max": 0.02, "update/angle/0.weight": 0.02}
    run = make_run("adam", 1, SOLVES, **early)
    assert early_values(run) == pytest.approx({k: v for k, v in early.items() if k.count("/") == 1})


# -- the report CLI on real tiny runs --------------------------------------------------------------
@pytest.mark.slow  # a longer real run: CI runs it (.ci/run selects every marker)
def test_report_writes_claims_and_signal_tables_for_a_tiny_sweep(cli, tmp_path):
    cli("-m", "task=nmt_synthetic", "optimizer=adam,adam_warmup", "seed=1,2", "trainer.max_steps=3", "group=tiny")
    sweep = cli.runs / "tiny"
    runs = load_runs([sweep])
    assert len(runs) == 4
    losses = sorted(r.final()["valid/loss"] for r in runs)
    threshold = (losses[1] + losses[2]) / 2  # half of the runs solve: both classes for the AUC
    out = tmp_path / "report"
    report_main([str(sweep), "--out", str(out), "--solved", f"valid/loss<{threshold!r}", "--no-figures"])

    with (out / "claims.csv").open() as f:
        rows = list(csv.DictReader(f))
    vanilla = next(r for r in rows if r["claim"] == "liu2019_vanilla_fails" and r["cell"] != "—")
    assert vanilla["cell"] == "lr=0.003, warmup.steps=29" and (vanilla["n_a"], vanilla["n_b"]) == ("2", "2")
    solved = Solved.parse(f"valid/loss<{threshold!r}")
    fraction = {v: statistics.fmean(solved(r) for r in runs if r.variant == v) for v in ("adam", "adam_warmup")}
    assert float(vanilla["effect"]) == pytest.approx(fraction["adam_warmup"] - fraction["adam"])
    # every run logs update/* (radam_repro/loggers/diagnostics.py): Kosson's predictions compare 2 failed with 2 solved
    kosson = [r for r in rows if r["claim"] == "kosson2024_update_size"]
    assert len(kosson) == 2 and all((r["n_a"], r["n_b"]) == ("2", "2") for r in kosson)
    assert NOT_MEASURED not in {r["verdict"] for r in kosson}
    assert "| liu2019_vanilla_fails |" in (out / "claims.md").read_text()

    with (out / "early_signals.csv").open() as f:
        signals = {r["signal"]: r for r in csv.DictReader(f)}
    assert {"adaptive_lr/log10_var_mean", "adaptive_lr/eps_dominated", "loss"} <= set(signals)
    assert {"update/relative", "update/angle", "update/rms", "update/relative_max", "update/angle_max"} <= set(signals)
    assert not any(name.startswith(("update/relative/", "update/angle/")) for name in signals)
    values = [(early_values(r)["loss"], not solved(r)) for r in runs]
    expected = auc(np.array([v for v, f in values if f]), np.array([v for v, f in values if not f]))
    assert float(signals["loss"]["auc"]) == pytest.approx(expected)

    first = {name: (out / name).read_bytes() for name in ("claims.csv", "claims.md", "early_signals.csv")}
    report_main([str(sweep), "--out", str(out), "--solved", f"valid/loss<{threshold!r}", "--no-figures"])
    assert first == {name: (out / name).read_bytes() for name in first}  # regenerates bit-identically
    # ... and from the committable archive of the sweep (radam_repro/report/archive.py) too
    archive_main([str(sweep), str(tmp_path / "archive")])
    from_archive = tmp_path / "from_archive"
    report_main([str(tmp_path / "archive"), "--out", str(from_archive), "--solved", f"valid/loss<{threshold!r}"])
    assert first == {name: (from_archive / name).read_bytes() for name in first}
    assert (out / "summary.csv").read_bytes() == (from_archive / "summary.csv").read_bytes()

    mine = tmp_path / "mine.yaml"
    mine.write_text(
        "claims:\n  - id: mine\n    source: {paper: me, year: 2026}\n    claim: c\n    experiment: tiny\n"
        "    predictions: [{stat: 'final:valid/loss', a: {variant: adam}, b: {variant: adam_warmup}, relation: '<'}]\n"
    )
    report_main([str(sweep), "--out", str(tmp_path / "mine"), "--claims", str(mine), "--solved", str(solved)])
    with (tmp_path / "mine" / "claims.csv").open() as f:
        assert [r["claim"] for r in csv.DictReader(f)] == ["mine"]
    figure = tmp_path / "mine" / "figures" / "early_signals.png"
    assert figure.read_bytes().startswith(b"\x89PNG\r\n\x1a\n") and matplotlib.image.imread(figure).shape[0] > 100
    assert "(figures/early_signals.png)" in (tmp_path / "mine" / "report.md").read_text()
