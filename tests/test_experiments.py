"""Issue 22's experiment definitions: every cell composes with the values its written rules give (the headers of
configs/experiment/multi30k_ablation.yaml, cifar_lr_robustness_cpu.yaml, warmup_depth.yaml), each grid has the size
its estimate assumes, and one cell of each real-data and paper-scale experiment trains 2 updates through the CLI."""

from __future__ import annotations

import functools
import json
from collections import Counter

import pytest
import yaml
from conftest import TINY_NMT, run_cli

from benchmarks import paper_cost

SMALLEST_DECODE = ["task.beam=1", "task.max_len_b=2"]  # the final test BLEU stays bounded without final_eval_limit

# Composing a grid's every cell through Hydra takes ~10-20 s; the rules and the claims tests read the same cells.
cell_configs = functools.cache(paper_cost.cell_configs)


@pytest.mark.parametrize(
    "experiment, size",
    [
        ("multi30k_ablation", 7 * 3 * 3),
        ("cifar_lr_robustness_cpu", 4 * 4 * 2),
        ("warmup_depth", 9 * 4 * 3),
        ("warmup_robustness", 117),  # unchanged by the depth axis's new cells
        ("paper_nmt", 6 * 5),
        ("paper_cifar10", 7 * 4 * 5),
        ("paper_lm1b", 2 * 3),
    ],
)
def test_grid_has_the_size_its_estimate_assumes(experiment, size):
    cells = paper_cost.sweep(experiment)
    assert len(cells) == size and len({tuple(cell) for cell in cells}) == size


def by_variant(configs) -> dict:
    return {(cfg.optimizer.name, cfg.optimizer.lr, cfg.seed): cfg for cfg in configs}


@pytest.mark.slow  # moved out of the default suite (<= 10 min on the slower 2-core AMD EPYC): CI runs it
def test_multi30k_cells_follow_rules_m1_to_m10():
    configs = by_variant(cell_configs("multi30k_ablation"))
    variants = ("adam", "adam_warmup", "adam_2k", "adam_eps", "radam", "radam_simple", "adam_preln")
    assert set(configs) == {(v, lr, s) for v in variants for lr in (3e-4, 6e-4, 1.2e-3) for s in (1, 2, 3)}
    t, s = 2000, 2000 / 70000
    for (variant, lr, _), cfg in configs.items():
        task, opt = cfg.task, cfg.optimizer
        model = task.model
        assert (task.name, model.layers, model.d_model, model.ffn_dim, model.heads) == ("nmt_multi30k", 3, 128, 512, 4)
        assert task.max_tokens == 2000 and task.model.dropout == 0.3 and task.label_smoothing == 0.1  # M1, M8
        assert task.model.pre_norm == (variant == "adam_preln")
        assert (task.average_last, task.beam, cfg.trainer.checkpoint_every, cfg.trainer.eval_every) == (10, 5, 32, 200)
        assert opt.weight_decay == 1e-4 and opt.eps == (1e-4 if variant == "adam_eps" else 1e-8)  # M7
        horizon = 2 / (1 - opt.betas[1])
        if variant in ("radam", "radam_simple"):
            assert round(horizon) == round(4000 * s) == 114  # M4: nu = W
        else:
            assert opt.betas[1] == 0.999  # M4: not scaled
        assert opt.warmup.kind == ("linear" if variant == "adam_warmup" else "none")
        if variant == "adam_warmup":
            assert (opt.warmup.steps, opt.warmup.init_lr) == (round(4000 * s), 1e-8)  # M2
        k = round(2000 * s) if variant == "adam_2k" else 0
        assert task.max_update == t + k and opt.get("freeze_steps", 0) == k  # M1, M5
        assert opt.lr == lr  # M5, M6: the grid's lr for every variant


def test_cifar_cpu_cells_follow_rules_c1_to_c6():
    configs = by_variant(cell_configs("cifar_lr_robustness_cpu"))
    lrs = (0.1, 0.03, 0.01, 0.003)
    assert set(configs) == {(o, lr, s) for o in ("sgd", "adam", "radam", "adam_warmup") for lr in lrs for s in (1, 2)}
    for (name, _, _), cfg in configs.items():
        task, opt = cfg.task, cfg.optimizer
        assert task.train_subset is None and task.batch_size == 128 and task.depth == 20  # C1
        assert task.epochs == 20 and list(task.decay_epochs) == [round(81 * 20 / 164), round(122 * 20 / 164)]  # C2
        assert opt.warmup.kind == ("linear" if name == "adam_warmup" else "none") and opt.warmup.steps == 100  # C4
        assert opt.weight_decay == 1e-4 and (name == "sgd" or opt.betas[1] == 0.999)  # C5, C6


@pytest.mark.slow  # a longer real run: CI runs it (.ci/run selects every marker)
def test_depth_axis_crosses_every_depth_with_every_horizon_at_the_recipes_lr():
    configs = cell_configs("warmup_depth")
    horizon = Counter()
    for cfg in configs:
        opt = cfg.optimizer
        assert opt.lr == 3e-3 and cfg.task.name == "nmt_synthetic"
        if opt.name == "radam":
            value = round(2 / (1 - opt.betas[1]))
        else:
            value = opt.warmup.steps if opt.warmup.kind == "linear" else 0
        horizon[opt.name, value, cfg.task.model.layers] += 1
    expected = [("adam", 0)] + [(v, h) for v in ("adam_warmup", "radam") for h in (10, 29, 87, 200)]
    assert horizon == {(v, h, layers): 3 for v, h in expected for layers in (2, 4, 6, 8)}


@pytest.mark.slow  # a longer real run: CI runs it (.ci/run selects every marker)
def test_paper_experiments_are_the_papers_recipes():
    nmt = by_variant(cell_configs("paper_nmt"))
    assert {seed for *_, seed in nmt} == {1, 1111, 2222, 3333, 4444}
    for (name, lr, _), cfg in nmt.items():
        assert cfg.task.name == "nmt" and cfg.trainer.precision == "bf16"
        assert (lr, cfg.task.max_update) == ((3.086e-4, 72000) if name == "adam_2k" else (3e-4, 70000))
    cifar = cell_configs("paper_cifar10")
    warmups = Counter(c.optimizer.warmup.steps for c in cifar if c.optimizer.warmup.kind == "linear")
    assert warmups == {w: 20 for w in (100, 200, 500, 1000)} and {c.task.epochs for c in cifar} == {164}
    lm = cell_configs("paper_lm1b")
    assert {(c.optimizer.name, c.optimizer.lr, c.optimizer.weight_decay) for c in lm} == {
        ("adam", 1e-3, 0.0),
        ("radam", 1e-3, 0.0),
    }


@pytest.mark.slow  # a longer real run: CI runs it (.ci/run selects every marker)
def test_paper_cost_is_flops_times_updates_over_the_assumed_throughput():
    rows = {r["experiment"]: r for r in paper_cost.estimate()}
    nmt = rows["paper_nmt"]
    assert nmt["updates_per_run"] == (25 * 70000 + 5 * 72000) // 30
    hours = nmt["flops_per_update"] * (25 * 70000 + 5 * 72000) / (paper_cost.PEAK * paper_cost.MFU["nmt"][0]) / 3600
    assert nmt["gpu_hours"] == pytest.approx(hours)
    assert rows["paper_cifar10"]["updates_per_run"] == 164 * 391
    assert rows["paper_cifar10"]["flops_per_update"] == pytest.approx(3 * 128 * 81.3e6, rel=0.02)  # ~41M MACs an image
    assert rows["paper_lm1b"]["updates_per_run"] == 14 * paper_cost.LM1B_TRAIN_TOKENS // 2560


def finished(runs, group):
    [summary] = (runs / group).rglob("summary.json")
    return json.loads(summary.read_text()), yaml.safe_load((summary.parent / "config.yaml").read_text())


@pytest.mark.slow  # a longer real run: CI runs it (.ci/run selects every marker)
def test_a_multi30k_cell_trains_two_updates_and_reports_averaged_bleu(tmp_path, multi30k):
    runs = tmp_path / "runs"
    run_cli(
        *("experiment=multi30k_ablation", "hydra.mode=RUN", "multi30k=adam_2k", "trainer.max_steps=2"),
        *TINY_NMT,
        *SMALLEST_DECODE,
        *("task.bpe_merges=300", "trainer.checkpoint_every=1", "task.average_last=2"),
        runs=runs,
        timeout=900,
    )
    summary, config = finished(runs, "multi30k_ablation")
    assert summary["status"] == "completed" and summary["step"] == 2
    assert summary["final"]["test/checkpoints_averaged"] == 2 and 0 <= summary["final"]["test/bleu"] <= 100
    assert config["optimizer"]["freeze_steps"] == 57 and config["task"]["max_update"] == 2057


@pytest.mark.parametrize(
    "experiment", ["cifar_lr_robustness_cpu", pytest.param("paper_cifar10", marks=pytest.mark.slow)]
)
def test_a_cifar_cell_trains_two_updates(tmp_path, cifar_dir, experiment):
    runs = tmp_path / "runs"
    overrides = ["task.depth=8", "trainer.precision=fp32", f"task.data_dir={cifar_dir}", "task.check_integrity=false"]
    run_cli(
        f"experiment={experiment}", "hydra.mode=RUN", "optimizer.lr=0.01", "trainer.max_steps=2", *overrides, runs=runs
    )
    summary, config = finished(runs, experiment)
    assert summary["status"] == "completed" and summary["step"] == 2 and 0 <= summary["final"]["test/acc"] <= 100


def test_paper_nmt_trains_two_updates_on_the_staged_sample(tmp_path, iwslt):
    runs = tmp_path / "runs"
    run_cli(
        *("experiment=paper_nmt", "hydra.mode=RUN", "ablation=radam", "trainer.max_steps=2", "trainer.device=cpu"),
        *("trainer.precision=fp32", "task.train_split=valid", "task.max_tokens=300"),
        *TINY_NMT,
        *SMALLEST_DECODE,
        runs=runs,
        timeout=900,
    )
    summary, config = finished(runs, "paper_nmt")
    assert summary["status"] == "completed" and summary["step"] == 2 and "test/bleu" in summary["final"]
    assert config["task"]["max_update"] == 70000 and config["optimizer"]["lr"] == 3e-4


@pytest.mark.slow  # moved out of the default suite (<= 10 min on the slower 2-core AMD EPYC): CI runs it
def test_paper_lm1b_trains_two_updates_on_the_staged_shard(tmp_path, shared_data):
    shard = "heldout-monolingual.tokenized.shuffled/news.en.heldout-00000-of-00050"
    runs = tmp_path / "runs"
    run_cli(
        *("experiment=paper_lm1b", "hydra.mode=RUN", "optimizer=radam", "trainer.max_steps=2", "trainer.device=cpu"),
        *(f"task.train_files=[{shard}]", f"task.valid_files=[{shard}]", "task.train_lines=[0,0.2]"),
        *("task.valid_lines=[0.99,1]", "trainer.precision=fp32", "task.model.embedding_dim=16"),
        *("task.model.hidden_size=32", "task.model.cutoffs=[100,400]"),
        runs=runs,
        timeout=900,
    )
    summary, config = finished(runs, "paper_lm1b")
    assert summary["status"] == "completed" and summary["step"] == 2 and summary["final"]["valid/ppl"] > 1
    assert config["task"]["epochs"] == 14 and config["task"]["model"]["hidden_size"] == 32


def test_depth_sweep_draws_layers_by_horizon_heat_maps(tmp_path, monkeypatch):
    """warmup_depth's groups (layers x W at one lr): a heat map per variant, layers on x, solved counts per cell."""
    from radam_repro.report import figures
    from radam_repro.report.aggregate import aggregate
    from radam_repro.report.runs import Run
    from radam_repro.report.tables import Solved

    runs = []
    for layers in (2, 8):
        for w in (10, 200):
            for seed in (1, 2):
                config = {
                    "seed": seed,
                    "task": {"name": "toy", "model": {"layers": layers}},
                    "optimizer": {"name": "adam_warmup", "lr": 3e-3, "warmup": {"kind": "linear", "steps": w}},
                }
                loss = 3.0 if (layers, w) == (8, 10) else 0.01
                runs.append(
                    Run(tmp_path / f"{layers}-{w}-{seed}", config, {"final": {"valid/loss": loss}}, [], "completed")
                )
    saved = []
    monkeypatch.setattr(figures, "_save", lambda fig, path: saved.append(fig) or path)
    [path] = figures.robustness_heatmaps(aggregate(runs), "toy", tmp_path, Solved.parse("valid/loss<0.1"))
    assert path.name == "robustness_toy_adam_warmup.png"
    solved_panel = saved[0].axes[0]
    assert solved_panel.get_xlabel() == "encoder = decoder layers"
    assert [t.get_text() for t in solved_panel.get_xticklabels()] == ["2", "8"]
    texts = {(round(t.get_position()[0]), round(t.get_position()[1])): t.get_text() for t in solved_panel.texts}
    assert texts == {(0, 0): "2/2", (0, 1): "2/2", (1, 0): "0/2", (1, 1): "2/2"}
    # Fig. 7 (metric vs warmup length): one line per depth, not one line through both depths' points
    saved.clear()
    assert figures.warmup_length(aggregate(runs), "toy", tmp_path).name == "warmup_length_toy.png"
    lines = {text.get_text() for text in saved[0].legends[0].get_texts()}
    assert lines == {f"Adam + linear warmup, lr=0.003, task.model.layers={n}" for n in (2, 8)}


@pytest.mark.parametrize(
    "experiment", [pytest.param("multi30k_ablation", marks=pytest.mark.slow), "cifar_lr_robustness_cpu"]
)
def test_the_real_data_claims_select_cells_of_their_experiment(experiment):
    """Every side of every prediction of a claim naming the experiment matches >= 2 seeds of one of its cells."""
    from omegaconf import OmegaConf

    from radam_repro.report.claims import load_claims
    from radam_repro.report.tables import _same
    from radam_repro.run_folder import flatten

    cells = [flatten(OmegaConf.to_container(cfg, resolve=True)) for cfg in cell_configs(experiment)]
    claims = [c for c in load_claims()[0] if experiment in c.experiments]
    assert sum(bool(c.paper and c.scale) for c in claims) >= 3  # the real-data claims: the paper's number, the gap
    for claim in claims:
        for prediction in claim.predictions:
            for side in (prediction.a, prediction.b):
                seeds = {
                    cell["seed"]
                    for cell in cells
                    if cell["optimizer.name"] in side.variant
                    and all(_same(cell.get(k), v) for k, v in side.where.items())
                }
                assert len(seeds) >= 2, (claim.id, str(side))
