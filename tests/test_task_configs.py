"""Every task's config goes through one place (``radam_repro.tasks.config``): resolved, defaulted, checked."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import yaml
from conftest import ROOT, data_root, run_cli

COMPOSE = """
import json, sys
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from radam_repro import tasks
from radam_repro.config import register

register()
out = []
with initialize_config_dir(config_dir=sys.argv[1], version_base="1.3"):
    for overrides in json.loads(sys.argv[2]):
        cfg = compose("radam_repro", overrides=overrides)
        out.append({"task": OmegaConf.to_container(tasks.config(cfg.task)), "optimizer": OmegaConf.to_container(cfg.optimizer)})
print(json.dumps(out))
"""


def compose(*override_lists: list[str]) -> list[dict]:
    """The composed configs (task through ``tasks.config``), in a fresh interpreter as the CLI composes them."""
    args = [str(ROOT / "radam_repro" / "configs"), json.dumps(override_lists)]
    proc = subprocess.run([sys.executable, "-c", COMPOSE, *args], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout)


DEFAULT_DATA_DIRS = {
    "cifar10": "cifar10",
    "nmt": "iwslt14/iwslt14.tokenized.de-en",
    "nmt_multi30k": "multi30k/data/task1/tok",
    "lm1b": "lm1b/1-billion-word-language-modeling-benchmark-r13output",
    "lm1b_small": "lm1b/1-billion-word-language-modeling-benchmark-r13output",
    "lm_wikitext2": "wikitext-2",
}


def test_every_task_default_data_dir_runs_through_data_root(tmp_path):
    from radam_repro.tasks import BUILDERS

    names = sorted(p.stem for p in (ROOT / "radam_repro" / "configs" / "task").glob("[!_]*.yaml"))
    assert names == sorted(BUILDERS)  # every task has its YAML and its entry
    configs = compose(*([f"task={name}", f"data_root={tmp_path}"] for name in names))
    for name, cfg in zip(names, configs):
        assert cfg["task"]["name"] == name
        if name == "nmt_synthetic":
            assert "data_dir" not in cfg["task"]  # generated data
        else:
            assert cfg["task"]["data_dir"] == f"{tmp_path}/{DEFAULT_DATA_DIRS[name]}", name


def test_the_default_cifar_layout_under_radam_repro_data_trains(tmp_path):
    """The new user's command: no task.data_dir, the data where the task looks by default ($RADAM_REPRO_DATA/cifar10)."""
    root = tmp_path / "data"
    (root / "cifar10").mkdir(parents=True)
    (root / "cifar10" / "cifar-10-batches-py").symlink_to(data_root() / "cifar10" / "partial" / "cifar-10-batches-py")
    runs = tmp_path / "runs"
    run_cli(
        *("optimizer=radam", "task.check_integrity=false", "trainer.max_steps=2", "trainer.device=cpu"),
        runs=runs,
        env={"RADAM_REPRO_DATA": str(root)},
    )
    (summary,) = runs.rglob("summary.json")
    assert json.loads(summary.read_text())["status"] == "completed"
    config = yaml.safe_load((summary.parent / "config.yaml").read_text())
    assert config["task"]["data_dir"] == f"{root}/cifar10" and config["task"]["epochs"] == 164  # defaults recorded
    assert config["optimizer"]["weight_decay"] == 1e-4  # recipe/_cifar10.yaml
    assert json.loads((summary.parent / "meta.json").read_text())["recipe"] == "cifar10_radam"


BAD_NUMBERS = [
    (["task=nmt_synthetic", "task.max_update=-5"], "task.max_update=-5 must be >= 1"),
    pytest.param(
        ["task=nmt_synthetic", "task.steps_per_epoch=0"], "task.steps_per_epoch=0 must be >= 1", marks=pytest.mark.slow
    ),
    pytest.param(["task=nmt_synthetic", "task.batch_size=0"], "task.batch_size=0 must be >= 1", marks=pytest.mark.slow),
    pytest.param(
        ["task=nmt_synthetic", "task.model.layers=1", "task.label_smoothing=1.5"],
        "task.label_smoothing=1.5 must be in [0.0, 1.0]",
        marks=pytest.mark.slow,
    ),
    pytest.param(["task=nmt", "task.max_update=-5"], "task.max_update=-5 must be >= 0", marks=pytest.mark.slow),
    pytest.param(["task=lm1b_small", "task.bptt=0"], "task.bptt=0 must be >= 1", marks=pytest.mark.slow),
    (["task=cifar10", "task.batch_size=0"], "task.batch_size=0 must be >= 1"),
    (["task=cifar10", "optimizer=sgd", "optimizer.lr=-1"], "invalid optimizer.lr=-1"),
    pytest.param(
        ["task=cifar10", "optimizer=sgd", "optimizer.momentum=-0.5"],
        "invalid optimizer.momentum=-0.5",
        marks=pytest.mark.slow,
    ),
]


def _ids(case) -> str:
    return " ".join((case.values if hasattr(case, "values") else case)[0])


@pytest.mark.parametrize("overrides, expected", BAD_NUMBERS, ids=[_ids(c) for c in BAD_NUMBERS])
def test_bad_task_and_optimizer_numbers_name_the_key_before_the_run_folder_exists(tmp_path, overrides, expected):
    run = tmp_path / "run"
    proc = run_cli(*overrides, "trainer.max_steps=2", f"hydra.run.dir={run}", runs=tmp_path / "runs", check=False)
    assert proc.returncode != 0 and expected in proc.stderr, proc.stderr[-3000:]
    assert not (run / "config.yaml").exists() and not (run / "summary.json").exists()


def test_the_pre_ln_control_is_adam_on_a_pre_ln_model_in_the_demos_one_command_grid():
    demo = yaml.safe_load((ROOT / "radam_repro" / "configs" / "experiment" / "demo.yaml").read_text())
    assert "adam_preln" in demo["hydra"]["sweeper"]["params"]["ablation"].split(",")
    adam, control, radam_pre_ln = compose(
        ["experiment=demo", "ablation=adam"],
        ["experiment=demo", "ablation=adam_preln"],
        ["task=nmt_synthetic", "optimizer=radam", "task.model.pre_norm=true"],  # any variant with pre-LN: no new recipe
    )
    assert control["optimizer"] == {**adam["optimizer"], "name": "adam_preln"}  # the report's label, Adam's values
    assert control["optimizer"]["algorithm"] == "adam" and control["optimizer"]["lr"] == 3e-3
    assert control["task"] == {**adam["task"], "model": {**adam["task"]["model"], "pre_norm": True}}
    assert radam_pre_ln["task"]["model"]["pre_norm"] and radam_pre_ln["optimizer"]["betas"] == [0.9, 0.931]
