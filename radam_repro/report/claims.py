"""Claims as data (``claims.yaml``): each claim predicts comparisons between run groups; the report gives verdicts.

A prediction compares a statistic of two sides, A and B, each the run groups of the report (:mod:`.aggregate`)
that a selector picks (variants, config values, and optionally only the solved or the failed runs):

* ``solved_fraction``: the fraction of runs the report's Solved criterion passes (diverged, failed and unfinished
  runs count as not solved, as in the report's solved column);
* ``final:<metric>``: the mean final metric (``final:valid/loss``) of completed runs with a finite value;
* ``best:<metric>``: the same of the best value during training (``best:test/acc``, cifar.py's headline);
* ``early:<metric>``: the mean over runs of a training metric averaged over the run's first 10 % of updates
  (:func:`radam_repro.report.signals.early_values`);
* ``lr_sensitivity:<metric>``: Wortsman et al. 2023's LR sensitivity over the lr axis,
  E_lr[min(l(lr), l_0) − l*] with l(lr) the mean final loss at that lr, l_0 the metric at initialisation
  (``at_init``) and l* = min over the lrs of l(lr); for a score (accuracy, BLEU) the same of −score.

``at_init``, the metric's value at initialisation (ln V for a loss, chance for an accuracy, 0 for BLEU): a diverged
run counts as it in ``final``/``best``/``lr_sensitivity`` (a blown-up model is no better than the start), where
without it a diverged run has no value. Required by ``lr_sensitivity``.

``by`` keys make cells that both sides share (e.g. at every lr of a map); ``each`` keys split side A only (each
warmup horizon against the one baseline); without either the comparison is pooled. ``across: every`` (the default)
needs the prediction to hold in every cell, ``any`` in at least one.

effect = stat(A) − stat(B). Its 95 % interval is the 2.5-97.5 percentile of the effect over :data:`RESAMPLES`
bootstrap resamples of the seeds within each run group (numpy's generator at a fixed seed per comparison, so the
table regenerates bit-identically). Verdicts, with the prediction's ``margin`` m (default 0):

* ``>``: holds if the interval lies above m, does not hold if it lies at or below m, else inconclusive; ``<`` mirrored;
* ``=``: holds if the interval lies within [−m, m], does not hold if it lies outside it, else inconclusive.

When inconclusive, the seeds per group that would decide: the standard error shrinks as 1/sqrt(n), so with the
bootstrap's standard error SE at n_0 seeds (the smallest group) and d the distance from the effect to the boundary
the interval straddles, n = ceil(n_0 · ((z_0.975 + z_0.80) · SE / d)²) gives 80 % power at the 5 % level
(the two-sample z-test's n = (z_0.975 + z_0.80)² (s_A² + s_B²) / d² for a difference of means).
A side with no matching runs gives "no runs", runs without the metric "not measured", a group with one seed
"inconclusive" (no spread to bootstrap); groups with one value each at the same lr are resampled as one stratum.
Without a solved criterion, predictions that need one (``solved_fraction``, an ``outcome`` selector) are "not
measured"; the others are evaluated.

A claim may carry ``where`` (config values every side of its predictions must have, e.g. the task), ``paper`` (the
paper's number, as text) and ``scale`` (how our runs differ from the paper's): the verdict table prints them.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from statistics import NormalDist
from typing import Any

import numpy as np
import yaml

from radam_repro.report.aggregate import Aggregate, Group, format_value, short_key, sort_key
from radam_repro.report.runs import Run
from radam_repro.report.signals import early_values
from radam_repro.report.tables import Solved, _same
from radam_repro.run_folder import DONE, Status, flatten, higher_is_better

CLAIMS_YAML = Path(__file__).resolve().parent / "claims.yaml"
EXPERIMENTS = Path(__file__).resolve().parents[1] / "configs" / "experiment"
RESAMPLES = 10_000
BOOTSTRAP_SEED = 0
POWER = 0.8
Z = NormalDist().inv_cdf(0.975) + NormalDist().inv_cdf(POWER)
RELATIONS = (">", "<", "=")
STATISTICS = ("solved_fraction", "final", "best", "early", "lr_sensitivity")
HOLDS, FAILS, INCONCLUSIVE, NO_RUNS, NOT_MEASURED = "holds", "does not hold", "inconclusive", "no runs", "not measured"
LR = "optimizer.lr"


@dataclass(frozen=True)
class Selector:
    """Run groups by variant (``optimizer.name``, one or a list) and config values; ``outcome``: solved or failed runs."""

    variant: tuple[str, ...] = ()
    where: dict[str, Any] = field(default_factory=dict)
    outcome: str | None = None

    @classmethod
    def parse(cls, raw: dict[str, Any], where: str) -> Selector:
        unknown = set(raw) - {"variant", "where", "outcome"}
        if unknown:
            raise ValueError(f"{where}: unknown selector keys {sorted(unknown)}; use variant, where, outcome")
        if raw.get("outcome") not in (None, "solved", "failed"):
            raise ValueError(f"{where}: outcome={raw['outcome']!r}; use solved or failed")
        variant = raw.get("variant") or ()
        values = {k: tuple(v) if isinstance(v, list) else v for k, v in (raw.get("where") or {}).items()}
        return cls((variant,) if isinstance(variant, str) else tuple(variant), values, raw.get("outcome"))

    def within(self, where: dict[str, Any]) -> Selector:
        """This selector restricted to ``where`` too (a claim's own ``where``)."""
        return Selector(self.variant, {**where, **self.where}, self.outcome)

    def groups(self, agg: Aggregate) -> list[Group]:
        return [g for g in agg.groups if (not self.variant or g.variant in self.variant) and self._matches(g)]

    def _matches(self, group: Group) -> bool:
        config = flatten(group.runs[0].config)
        return all(_same(config.get(k), v) for k, v in self.where.items())

    def runs(self, group: Group, solved: Solved) -> list[Run]:
        if self.outcome is None:
            return group.runs
        return [r for r in group.runs if r.status in DONE and solved(r) == (self.outcome == "solved")]

    def __str__(self) -> str:
        parts = ["|".join(self.variant) or "all"] + [f"{short_key(k)}={format_value(v)}" for k, v in self.where.items()]
        return " ".join(parts) + (f" ({self.outcome} runs)" if self.outcome else "")


@dataclass(frozen=True)
class Prediction:
    stat: str  # solved_fraction | final:<metric> | best:<metric> | early:<metric> | lr_sensitivity:<metric>
    a: Selector
    b: Selector
    relation: str
    margin: float = 0.0
    by: tuple[str, ...] = ()
    each: tuple[str, ...] = ()
    across: str = "every"
    at_init: float | None = None

    @property
    def needs_solved(self) -> bool:
        return self.kind == "solved_fraction" or self.a.outcome is not None or self.b.outcome is not None

    @property
    def kind(self) -> str:
        return self.stat.split(":", 1)[0]

    @property
    def metric(self) -> str | None:
        return self.stat.split(":", 1)[1] if ":" in self.stat else None

    def __str__(self) -> str:
        name = self.kind + (f"[{self.metric}]" if self.metric else "")
        within = f" within {self.margin:g}" if self.relation == "=" else (f" + {self.margin:g}" if self.margin else "")
        cells = " at every " if self.across == "every" else " at some "
        where = (cells + ", ".join(short_key(k) for k in self.by + self.each)) if self.by or self.each else " pooled"
        return f"{name}({self.a}) {self.relation} {name}({self.b}){within}{where}"


@dataclass
class Claim:
    id: str
    source: dict[str, Any]
    claim: str
    experiments: tuple[str, ...]  # experiment config names; one may not exist yet
    predictions: list[Prediction]
    paper: str = ""  # the paper's number(s), as text
    scale: str = ""  # how our runs differ from the paper's (model, data, updates, seeds)
    where: dict[str, Any] = field(default_factory=dict)  # config values all its predictions' sides share

    def experiment(self) -> str:
        """The experiments, each not (yet) in radam_repro/configs/experiment/ marked."""
        return ", ".join(
            e + ("" if (EXPERIMENTS / f"{e}.yaml").is_file() else " (not defined yet)") for e in self.experiments
        )

    def cite(self) -> str:
        s = self.source
        return f"{s.get('paper', '?')} {s.get('year', '')}" + (f", arXiv {s['arxiv']}" if s.get("arxiv") else "")


@dataclass
class Cell:
    """One comparison: a cell of a prediction (or its pooled whole) and what the bootstrap says."""

    where: str
    verdict: str
    n_a: int = 0
    n_b: int = 0
    a: float | None = None
    b: float | None = None
    effect: float | None = None
    low: float | None = None
    high: float | None = None
    seeds_needed: int | None = None
    note: str = ""


def load_claims(path: Path = CLAIMS_YAML) -> tuple[list[Claim], Solved | None]:
    """The claims and the file's default Solved criterion; a malformed entry raises ValueError naming it and the fix."""
    if not path.is_file():
        raise FileNotFoundError(f"no claims file at {path}; pass --claims PATH (the package ships {CLAIMS_YAML})")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ValueError(f"{path} is not YAML ({type(e).__name__}: {e})") from e
    if not isinstance(data, dict) or not isinstance(data.get("claims") or [], list):
        raise ValueError(f"{path}: expected a mapping with a list under `claims:`; see {CLAIMS_YAML}")
    claims = []
    for i, raw in enumerate(data.get("claims") or []):
        fields = {"id", "source", "claim", "experiment", "predictions"}
        where = f"{path}: claim {i}" + (f" ({raw.get('id')})" if isinstance(raw, dict) else "")
        if not isinstance(raw, dict) or fields - set(raw) or not isinstance(raw["predictions"], list):
            raise ValueError(
                f"{where} needs the fields {sorted(fields)} (predictions a list); see the top of {CLAIMS_YAML.name}"
            )
        if unknown := set(raw) - fields - {"where", "paper", "scale"}:
            raise ValueError(f"{where}: unknown keys {sorted(unknown)}; a claim also takes where, paper, scale")
        common = Selector.parse({"where": raw.get("where") or {}}, f"{where}, where").where
        predictions = [_prediction(p, f"{where}, prediction {j}") for j, p in enumerate(raw["predictions"])]
        predictions = [replace(p, a=p.a.within(common), b=p.b.within(common)) for p in predictions]
        experiments = raw["experiment"]
        experiments = (experiments,) if isinstance(experiments, str) else tuple(experiments)
        extra = {k: str(raw[k]).strip() for k in ("paper", "scale") if raw.get(k)}
        claims.append(Claim(raw["id"], raw["source"], raw["claim"], experiments, predictions, where=common, **extra))
    return claims, Solved.parse(data["solved"]) if data.get("solved") else None


def _prediction(raw: dict[str, Any], where: str) -> Prediction:
    fields = {"stat", "a", "b", "relation", "margin", "by", "each", "across", "at_init"}
    if not isinstance(raw, dict):
        raise ValueError(f"{where}: a prediction is a mapping of {sorted(fields)}")
    if unknown := set(raw) - fields:
        raise ValueError(f"{where}: unknown keys {sorted(unknown)}; a prediction takes {sorted(fields)}")
    stat = str(raw.get("stat", ""))
    kind, _, name = stat.partition(":")
    if kind not in STATISTICS or bool(name) == (kind == "solved_fraction"):
        raise ValueError(
            f"{where}: stat={stat!r}; use solved_fraction, final:<metric>, best:<metric>, early:<metric> or "
            "lr_sensitivity:<metric>"
        )
    if raw.get("relation") not in RELATIONS:
        raise ValueError(f"{where}: relation={raw.get('relation')!r}; use one of {', '.join(RELATIONS)}")
    if raw.get("across", "every") not in ("every", "any"):
        raise ValueError(f"{where}: across={raw['across']!r}; use every or any")
    by, each = tuple(raw.get("by") or ()), tuple(raw.get("each") or ())
    if kind == "lr_sensitivity" and (LR in by + each or raw.get("at_init") is None):
        raise ValueError(f"{where}: lr_sensitivity runs over the lr axis: give at_init and leave {LR} out of by/each")
    return Prediction(
        stat=stat,
        a=Selector.parse(raw.get("a") or {}, f"{where}, a"),
        b=Selector.parse(raw.get("b") or {}, f"{where}, b"),
        relation=raw["relation"],
        margin=float(raw.get("margin", 0.0)),
        by=by,
        each=each,
        across=raw.get("across", "every"),
        at_init=None if raw.get("at_init") is None else float(raw["at_init"]),
    )


# -- evaluation ------------------------------------------------------------------------------------
def evaluate(prediction: Prediction, agg: Aggregate, solved: Solved | None) -> tuple[str, list[Cell]]:
    """The prediction's verdict and its cells (one when pooled)."""
    if solved is None and prediction.needs_solved:
        return NOT_MEASURED, [Cell("—", NOT_MEASURED, note="needs a solved criterion (--solved)")]
    side_a, side_b = prediction.a.groups(agg), prediction.b.groups(agg)
    if not side_a or not side_b:
        return NO_RUNS, [Cell("—", NO_RUNS, note=f"no runs of {prediction.a if not side_a else prediction.b}")]
    a_cells = _cells(side_a, prediction.by + prediction.each)
    b_cells = _cells(side_b, prediction.by)
    keys = sorted(
        (k for k in a_cells if k[: len(prediction.by)] in b_cells), key=lambda k: tuple(sort_key(v) for v in k)
    )
    if not keys:
        return NO_RUNS, [Cell("—", NO_RUNS, note=f"no {', '.join(prediction.by)} value that both sides ran")]
    cells = []
    for key in keys:
        where = ", ".join(f"{short_key(k)}={format_value(v)}" for k, v in zip(prediction.by + prediction.each, key))
        cell = compare(prediction, a_cells[key], b_cells[key[: len(prediction.by)]], solved)
        cell.where = where or "pooled"
        cells.append(cell)
    return combine([c.verdict for c in cells], prediction.across), cells


def _cells(groups: list[Group], keys: tuple[str, ...]) -> dict[tuple, list[Group]]:
    cells: dict[tuple, list[Group]] = {}
    for g in groups:
        config = flatten(g.runs[0].config)
        cells.setdefault(tuple(config.get(k) for k in keys), []).append(g)
    return cells


def combine(verdicts: list[str], across: str = "every") -> str:
    """``every``: holds if every decided cell holds, does not hold if one does not; ``any``: the reverse roles."""
    decided = [v for v in verdicts if v in (HOLDS, FAILS, INCONCLUSIVE)]
    if not decided:
        return NOT_MEASURED if NOT_MEASURED in verdicts else NO_RUNS
    win, lose = (HOLDS, FAILS) if across == "every" else (FAILS, HOLDS)
    if all(v == win for v in decided):
        return win
    return lose if lose in decided else INCONCLUSIVE


def compare(prediction: Prediction, groups_a: list[Group], groups_b: list[Group], solved: Solved | None) -> Cell:
    """Bootstrap the effect stat(A) − stat(B) over seeds within each group and judge it against the relation."""
    strata_a = _strata(prediction, prediction.a, groups_a, solved)
    strata_b = _strata(prediction, prediction.b, groups_b, solved)
    n_a, n_b = sum(len(v) for _, v in strata_a), sum(len(v) for _, v in strata_b)
    if not n_a or not n_b:
        return Cell("", NOT_MEASURED, n_a, n_b, note=f"no {prediction.stat} in the runs of one side")
    if prediction.kind == "lr_sensitivity" and min(len({lr for lr, _ in s}) for s in (strata_a, strata_b)) < 2:
        return Cell("", NO_RUNS, n_a, n_b, note="LR sensitivity needs runs at two lrs or more on each side")
    statistic = _lr_sensitivity if prediction.kind == "lr_sensitivity" else _pooled_mean
    a, b = (float(statistic([(x, v[None, :]) for x, v in s])[0]) for s in (strata_a, strata_b))
    rng = np.random.default_rng(BOOTSTRAP_SEED)
    effects = statistic(_resample(strata_a, rng)) - statistic(_resample(strata_b, rng))
    low, high = (float(x) for x in np.percentile(effects, [2.5, 97.5]))
    cell = Cell("", judge(prediction.relation, prediction.margin, low, high), n_a, n_b, a, b, a - b, low, high)
    smallest = min(len(v) for _, v in strata_a + strata_b)
    if smallest < 2:
        cell.verdict, cell.note = INCONCLUSIVE, "a group with one seed: no spread to bootstrap"
    if cell.verdict == INCONCLUSIVE:
        cell.seeds_needed = seeds_needed(cell.effect, float(np.std(effects, ddof=1)), smallest, prediction)
    return cell


def judge(relation: str, margin: float, low: float, high: float) -> str:
    if relation == "=":
        return HOLDS if -margin <= low and high <= margin else FAILS if high < -margin or low > margin else INCONCLUSIVE
    if relation == "<":
        low, high = -high, -low
    return HOLDS if low > margin else FAILS if high <= margin else INCONCLUSIVE


def seeds_needed(effect: float, se: float, seeds: int, prediction: Prediction) -> int | None:
    """n = ceil(n_0 (z · SE / d)²), d the distance from the effect to the boundary its interval straddles; None if
    there is no spread or the effect sits on the boundary."""
    m = prediction.margin
    if prediction.relation == "=":
        distance = abs(abs(effect) - m)
    else:
        distance = abs(effect - (m if prediction.relation == ">" else -m))
    if se <= 0 or distance <= 0:
        return None
    return max(seeds + 1, math.ceil(seeds * (Z * se / distance) ** 2))


def _strata(
    prediction: Prediction, side: Selector, groups: list[Group], solved: Solved | None
) -> list[tuple[Any, np.ndarray]]:
    """Per group, (its lr, the per-run values of the statistic); groups without values are left out.

    Groups left with one value (common when an ``outcome`` selector splits a group into its solved and failed runs)
    are resampled together, one stratum per lr: alone, each would add no spread to the bootstrap."""
    strata, single = [], {}  # single: lr -> the values of the groups with one
    for g in groups:
        values = [v for r in side.runs(g, solved) if (v := run_value(prediction, r, solved)) is not None]
        lr = flatten(g.runs[0].config).get(LR)
        if len(values) == 1:
            single.setdefault(lr, []).append(values[0])
        elif values:
            strata.append((lr, np.array(values, dtype=float)))
    return strata + [(lr, np.array(values, dtype=float)) for lr, values in single.items()]


def run_value(prediction: Prediction, run: Run, solved: Solved | None) -> float | None:
    """One run's contribution to the statistic, or None when it has none."""
    if prediction.kind == "solved_fraction":
        return float(solved(run))
    if prediction.kind == "early":
        return early_values(run).get(prediction.metric)
    values = run.best() if prediction.kind == "best" else run.final()
    value = values.get(prediction.metric) if run.status == Status.COMPLETED else None
    if not (isinstance(value, (int, float)) and math.isfinite(value)):  # a diverged run is no better than the start
        value = prediction.at_init if run.status == Status.DIVERGED else None
    if value is None or prediction.kind != "lr_sensitivity":
        return None if value is None else float(value)
    sign = -1.0 if higher_is_better(prediction.metric) else 1.0  # a score's sensitivity is that of -score
    return min(sign * float(value), sign * prediction.at_init)


def _resample(strata: list[tuple[Any, np.ndarray]], rng: np.random.Generator) -> list[tuple[Any, np.ndarray]]:
    """Each stratum's values drawn with replacement, RESAMPLES times: arrays of shape (RESAMPLES, n)."""
    return [(lr, values[rng.integers(0, len(values), (RESAMPLES, len(values)))]) for lr, values in strata]


def _pooled_mean(strata: list[tuple[Any, np.ndarray]]) -> np.ndarray:
    return np.concatenate([v for _, v in strata], axis=1).mean(axis=1)


def _lr_sensitivity(strata: list[tuple[Any, np.ndarray]]) -> np.ndarray:
    """Wortsman et al.'s E_lr[l(lr) − min_lr l(lr)] (values already capped at l_0), per resample."""
    by_lr: dict[Any, list[np.ndarray]] = {}
    for lr, values in strata:
        by_lr.setdefault(lr, []).append(values)
    means = np.stack([np.concatenate(v, axis=1).mean(axis=1) for v in by_lr.values()], axis=1)
    return (means - means.min(axis=1, keepdims=True)).mean(axis=1)


# -- the verdict table -----------------------------------------------------------------------------
@dataclass
class Verdict:
    claim: Claim
    verdict: str
    predictions: list[tuple[Prediction, str, list[Cell]]]


def evaluate_claims(claims: list[Claim], agg: Aggregate, solved: Solved | None) -> list[Verdict]:
    """Every claim's predictions on the report's groups; a claim holds when all of its predictions hold."""
    verdicts = []
    for claim in claims:
        results = [(p, *evaluate(p, agg, solved)) for p in claim.predictions]
        verdict = combine([v for _, v, _ in results])
        evaluated = sum(v in (HOLDS, FAILS, INCONCLUSIVE) for _, v, _ in results)
        if 0 < evaluated < len(results):
            verdict += f" ({evaluated} of {len(results)} predictions have runs)"
        verdicts.append(Verdict(claim, verdict, results))
    return verdicts


def write_claims(verdicts: list[Verdict], out: Path, solved: Solved | None) -> list[Path]:
    """``claims.md`` (a verdict per claim that has runs here, then its every comparison; the claims without runs in
    one line) and ``claims.csv`` (one row per comparison of every claim)."""
    out.mkdir(parents=True, exist_ok=True)
    rows = [
        [v.claim.id, v.claim.cite(), v.claim.experiment(), v.verdict, str(p), verdict, c]
        for v in verdicts
        for p, verdict, cells in v.predictions
        for c in cells
    ]
    with (out / "claims.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(
            ["claim", "source", "experiment", "claim_verdict", "prediction", "prediction_verdict", "cell", "verdict"]
            + ["n_a", "n_b", "a", "b", "effect", "ci_low", "ci_high", "seeds_needed", "note"]
        )
        for *head, c in rows:
            numbers = [c.a, c.b, c.effect, c.low, c.high]
            writer.writerow(
                [*head, c.where, c.verdict, c.n_a, c.n_b, *("" if x is None else x for x in numbers)]
                + ["" if c.seeds_needed is None else c.seeds_needed, c.note]
            )
    absent = [v.claim for v in verdicts if v.verdict == NO_RUNS]
    shown = [v for v in verdicts if v.verdict != NO_RUNS]
    criterion = ""  # named only where a prediction shown uses it (a CIFAR or BLEU claim does not)
    if any(p.needs_solved for v in shown for p, _, _ in v.predictions):
        criterion = f" (solved: final `{solved}`)" if solved else " (solved: no criterion given)"
    lines = [
        "# Claims",
        "",
        f"Each claim of `claims.yaml` as predictions over run groups{criterion}. Effect = A − B with "
        f"a 95 % percentile-bootstrap interval over seeds within each run group ({RESAMPLES} resamples, seed "
        f"{BOOTSTRAP_SEED}); seeds needed: per group, for 80 % power at the 5 % level (radam_repro/report/claims.py).",
        "",
        *(_verdict_table(shown) if shown else ["No claim has runs in these folders."]),
        *(
            ["", "No runs here for: " + ", ".join(f"`{c.id}` (`{c.experiment()}`)" for c in absent) + "."]
            if absent
            else []
        ),
        "",
        "## Every comparison",
        "",
        "| claim | prediction | cell | runs A / B | A | B | effect [95 % CI] | verdict | seeds needed |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for claim_id, _, _, claim_verdict, prediction, _, c in rows:
        if claim_verdict == NO_RUNS:
            continue
        effect = "—" if c.effect is None else f"{c.effect:+.3g} [{c.low:+.3g}, {c.high:+.3g}]"
        verdict = c.verdict + (f" ({c.note})" if c.note else "")
        cells = [claim_id, f"`{prediction}`", c.where, f"{c.n_a} / {c.n_b}", _number(c.a), _number(c.b), effect]
        cells += [verdict, "—" if c.seeds_needed is None else str(c.seeds_needed)]
        lines.append("| " + " | ".join(cells) + " |")
    (out / "claims.md").write_text("\n".join(lines) + "\n")
    return [out / "claims.md", out / "claims.csv"]


def _verdict_table(verdicts: list[Verdict]) -> list[str]:
    """One row per claim; with the paper's number, ours and the scale gap when a claim gives them."""
    if not any(v.claim.paper or v.claim.scale for v in verdicts):
        rows = [(v.claim.id, v.claim.cite(), v.claim.experiment(), f"**{v.verdict}**", v.claim.claim) for v in verdicts]
        return ["| claim | source | experiment | verdict | the claim |", "|---|---|---|---|---|"] + [
            "| " + " | ".join(r) + " |" for r in rows
        ]
    header = "| claim | source | the claim | the paper | ours (A vs B, effect [95 % CI]) | scale gap | verdict |"
    rows = [
        (
            v.claim.id,
            v.claim.cite(),
            v.claim.claim + _where(v.claim),
            v.claim.paper or "—",
            ours(v),
            v.claim.scale or "—",
        )
        for v in verdicts
    ]
    return [header, "|---|---|---|---|---|---|---|"] + [
        "| " + " | ".join(r) + f" | **{v.verdict}** |" for r, v in zip(rows, verdicts)
    ]


def ours(verdict: Verdict) -> str:
    """What our runs measured, per prediction: A vs B and the effect for one cell, else how many cells held."""
    parts = []
    for prediction, _, cells in verdict.predictions:
        a, b = (_own(side, verdict.claim.where) for side in (prediction.a, prediction.b))
        measured = [c for c in cells if c.effect is not None]
        if len(cells) == 1 and measured:
            c = measured[0]
            parts.append(f"{a} {c.a:.3g} vs {b} {c.b:.3g}: {c.effect:+.3g} [{c.low:+.3g}, {c.high:+.3g}]")
        elif measured:
            held = sum(c.verdict == HOLDS for c in cells)
            parts.append(f"{a} vs {b}: holds in {held} of {len(cells)} cells")
        else:
            parts.append(f"{a} vs {b}: {cells[0].verdict if cells else NO_RUNS}")
    return "; ".join(parts)


def _where(claim: Claim) -> str:
    return (
        " (" + ", ".join(f"{short_key(k)}={format_value(v)}" for k, v in claim.where.items()) + ")"
        if claim.where
        else ""
    )


def _own(side: Selector, common: dict[str, Any]) -> Selector:
    """The selector without the values its claim gives every side (the table says them once, in the claim)."""
    return Selector(side.variant, {k: v for k, v in side.where.items() if k not in common}, side.outcome)


def _number(value: float | None) -> str:
    return "—" if value is None else f"{value:.3g}"
