"""experiment=warmup_mechanisms as a dry run: Hydra expands its sweep as a multirun would, every cell composes, and
the grid is what its header and report/claims.yaml say (nothing is trained)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from hydra import compose, initialize_config_dir
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser

from radam_repro.config import register, without_foreign_optimizer_schemas

CONFIGS = Path(__file__).resolve().parents[1] / "radam_repro" / "configs"
CLAIMS = CONFIGS.parent / "report" / "claims.yaml"


@pytest.fixture(scope="module")
def grid():
    """The experiment's jobs (each a list of overrides) and the composed config of each distinct cell."""
    register()  # the schemas (_config_schema, task/_nmt_synthetic, optimizer/_adam, ...) in Hydra's ConfigStore
    with without_foreign_optimizer_schemas(), initialize_config_dir(str(CONFIGS), version_base="1.3"):
        cfg = compose("radam_repro", overrides=["experiment=warmup_mechanisms"], return_hydra_config=True)
        params = [f"{key}={value}" for key, value in cfg.hydra.sweeper.params.items()]
        parser = OverridesParser.create(config_loader=GlobalHydra.instance().config_loader())
        (jobs,) = BasicSweeper.split_arguments(parser.parse_overrides(params), max_batch_size=None)
        cells = {
            next(o for o in job if o.startswith("mechanisms=")): compose(
                "radam_repro", overrides=["experiment=warmup_mechanisms", *job]
            )
            for job in jobs
            if {"optimizer.lr=0.01", "seed=1"} <= set(job)
        }
    return jobs, cells


def test_the_grid_is_13_cells_by_3_lrs_by_10_seeds(grid):
    jobs, cells = grid
    assert len(jobs) == 390 == len({tuple(job) for job in jobs})
    assert len(cells) == 13
    seeds = {override for job in jobs for override in job if override.startswith("seed=")}
    assert seeds == {f"seed={s}" for s in range(1, 11)}


def test_every_cell_composes_into_its_variant_depth_and_recipe(grid):
    _, cells = grid
    by_label = {(c.optimizer.name, c.task.model.layers): c for c in cells.values()}
    depth = {(name, layers) for name in ("adam", "adam_warmup", "adam_preln") for layers in (2, 4, 8)}
    others = {(name, 4) for name in ("radam", "adam_gi", "adam_untuned_linear", "adam_untuned_exponential")}
    assert set(by_label) == depth | others
    for cfg in cells.values():
        assert cfg.task.name == "nmt_synthetic" and cfg.optimizer.lr == 0.01 and cfg.trainer.hessian_power_iters > 0
        assert cfg.group == "warmup_mechanisms" and cfg.trainer.threads == 1
    assert by_label[("adam_preln", 8)].task.model.pre_norm and not by_label[("adam", 8)].task.model.pre_norm
    assert by_label[("adam_warmup", 2)].optimizer.warmup.steps == 29
    assert by_label[("adam_gi", 4)].optimizer.algorithm == "adam_gi"
    # Ma & Yarats: the untuned warmups take RAdam's beta2, so that "at the same beta2" compares like with like
    for name in ("radam", "adam_untuned_linear", "adam_untuned_exponential"):
        assert list(by_label[(name, 4)].optimizer.betas) == [0.9, 0.931]


def test_the_claims_that_name_it_find_their_variants_in_it(grid):
    _, cells = grid
    variants = {cfg.optimizer.name for cfg in cells.values()}
    claims = yaml.safe_load(CLAIMS.read_text())["claims"]
    named = [
        c
        for c in claims
        if "warmup_mechanisms" in ([c["experiment"]] if isinstance(c["experiment"], str) else c["experiment"])
    ]
    assert {c["id"] for c in named} >= {
        "ma_yarats2019_untuned_warmup",
        "kalra_barkeshli2024_gi_adam",
        "kosson2024_update_size",
    }
    for claim in named:
        for prediction in claim["predictions"]:
            for side in (prediction["a"], prediction["b"]):
                wanted = side.get("variant")
                wanted = [wanted] if isinstance(wanted, str) else wanted or []
                assert set(wanted) <= variants | {"radam_simple", "adam_2k", "adam_eps"}, (claim["id"], wanted)
