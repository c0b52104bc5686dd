"""The optimizer registry: ``@register`` next to the class, defaults read from the class and derived everywhere."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from conftest import ROOT

from radam_repro.config import optimizer_schema
from radam_repro.optim import OPTIMIZERS, Adam, register

LION = '''
"""Lion (Chen et al. 2023): the sign of an interpolated momentum, decoupled weight decay."""

from __future__ import annotations

import torch

from radam_repro.optim.registry import register


@register("lion")
class Lion(torch.optim.Optimizer):
    """Lion (Chen et al. 2023): sign of beta1 m + (1 - beta1) g, momentum beta2."""

    def __init__(self, params, lr: float = 1e-4, betas: tuple[float, float] = (0.9, 0.99), weight_decay: float = 0.0):
        super().__init__(params, dict(lr=lr, betas=tuple(betas), weight_decay=weight_decay))

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                m = self.state[p].setdefault("exp_avg", torch.zeros_like(p))
                p.mul_(1 - group["lr"] * group["weight_decay"])
                p.add_(torch.sign(beta1 * m + (1 - beta1) * p.grad), alpha=-group["lr"])
                m.lerp_(p.grad, 1 - beta2)
'''


@pytest.fixture
def package_copy(tmp_path: Path) -> Path:
    """The package alone, copied: what a user who adds an algorithm edits."""
    shutil.copytree(ROOT / "radam_repro", tmp_path / "radam_repro", ignore=shutil.ignore_patterns("__pycache__"))
    return tmp_path


def python(copy: Path, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(copy), "OMP_NUM_THREADS": "1", "TQDM_DISABLE": "1", "WANDB_MODE": "disabled"}
    env["RADAM_REPRO_CACHE"] = str(copy / "cache")
    proc = subprocess.run([sys.executable, *args], cwd=copy, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def test_a_new_algorithm_is_its_class_file_and_its_yaml(package_copy):
    (package_copy / "radam_repro" / "optim" / "lion.py").write_text(LION)
    (package_copy / "radam_repro" / "configs" / "optimizer" / "lion.yaml").write_text(
        "# Lion (Chen et al. 2023)\ndefaults: [_lion, _self_]\nname: lion\n"
    )
    run = package_copy / "run"
    python(
        package_copy,
        *("-m", "radam_repro", "task=nmt_synthetic", "optimizer=lion", "task.model.layers=1"),
        *("trainer.max_steps=2", "trainer.device=cpu", "trainer.progress=false", f"hydra.run.dir={run}"),
    )
    config = yaml.safe_load((run / "config.yaml").read_text())
    # its own defaults, none of Adam's or of the task's recipe (the task's recipes set lr 3e-3, beta2 0.98, wd 1e-4)
    assert config["optimizer"] == {
        "name": "lion",
        "algorithm": "lion",
        "lr": 1e-4,
        "betas": [0.9, 0.99],
        "weight_decay": 0.0,
        "warmup": {"kind": "none", "steps": 0, "init_lr": 0.0},
    }
    assert json.loads((run / "meta.json").read_text())["recipe"] is None  # the run folder says no recipe applied
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["step"] == 2
    listing = python(package_copy, "-m", "radam_repro.optim", "--list").stdout
    assert "radam_repro.optim.lion.Lion" in listing and "lr=0.0001, betas=[0.9, 0.99], weight_decay=0.0" in listing
    assert "[lion] Lion (Chen et al. 2023)" in listing


DERIVED = """
import json
from hydra import compose, initialize_config_dir
from radam_repro.config import register
from radam_repro.fairseq_plugin import fairseq_options
from radam_repro.optim import OPTIMIZERS

register()
with initialize_config_dir(config_dir=str(__import__("pathlib").Path("radam_repro/configs").resolve()), version_base="1.3"):
    cfg = compose("radam_repro", overrides=["optimizer=radam_simple", "task=lm1b"])
options = {o.name: o.default for o in fairseq_options(OPTIMIZERS["radam"])}
print(json.dumps({"schema": cfg.optimizer.eps, "registry": OPTIMIZERS["adam_2k"].kwargs({})["eps"], "fairseq": options["adam_eps"]}))
"""


@pytest.mark.parametrize("eps", [None, pytest.param(3e-7, marks=pytest.mark.slow)])  # 3e-7: CI
def test_a_default_changed_in_the_class_changes_the_schema_the_listing_and_the_fairseq_options(package_copy, eps):
    """Adam's eps is written once (AdamFamily's signature): every variant, config and fairseq option follows it."""
    source = package_copy / "radam_repro" / "optim" / "adam_family.py"
    if eps is not None:
        text = source.read_text()
        assert text.count("eps: float = 1e-8,") == 1
        source.write_text(text.replace("eps: float = 1e-8,", f"eps: float = {eps},"))
    expected = eps or 1e-8
    derived = json.loads(python(package_copy, "-c", DERIVED).stdout)
    assert derived == {"schema": expected, "registry": expected, "fairseq": expected}
    listing = python(package_copy, "-m", "radam_repro.optim", "--list").stdout
    assert listing.count(f"eps={expected!r}") == 5  # adam, adam_2k, radam, simplified_radam, adam_gi


def test_a_duplicate_name_is_refused_naming_both_classes():
    class MyAdam(Adam):
        pass

    with pytest.raises(ValueError, match=r"'adam' is taken by radam_repro\.optim\.variants\.Adam.*MyAdam"):
        register("adam")(MyAdam)
    assert OPTIMIZERS["adam"].cls is Adam


def test_only_optimizer_classes_register():
    with pytest.raises(TypeError, match="'scaler'.*not a torch.optim.Optimizer"):
        register("scaler")(torch.amp.GradScaler)
    assert "scaler" not in OPTIMIZERS


def test_an_unannotated_keyword_takes_the_type_of_its_default():
    class Plain(torch.optim.Optimizer):
        """An optimizer written without annotations."""

        def __init__(self, params, lr=1e-3, momentum=0.9, steps=10, nesterov=False, betas=(0.9, 0.99), scale=None):
            super().__init__(params, dict(lr=lr))

    try:
        register("plain_test")(Plain)
        info = OPTIMIZERS["plain_test"]
        assert [(hp.name, hp.type, hp.default) for hp in info.hyperparameters] == [
            ("lr", float, 1e-3),
            ("momentum", float, 0.9),
            ("steps", int, 10),
            ("nesterov", bool, False),
            ("betas", list[float], [0.9, 0.99]),
            ("scale", Any, None),
        ]
        schema = optimizer_schema(info)  # the Hydra schema builds from it
        assert schema().steps == 10 and schema().betas == [0.9, 0.99]
    finally:
        OPTIMIZERS.pop("plain_test", None)


def test_fairseq_options_are_the_class_defaults_under_fairseq_names():
    from radam_repro.fairseq_plugin import fairseq_options, optimizer_kwargs

    options = {o.name: o for o in fairseq_options(OPTIMIZERS["radam"])}
    assert {name: o.default for name, o in options.items()} == {
        "adam_betas": "(0.9, 0.999)",
        "adam_eps": 1e-8,
        "weight_decay": 0.0,
        "l2_weight_decay": False,
        "eps_placement": "sqrt_v",
        "radam_threshold": 5.0,
        "radam_no_sgd": False,
    }
    parsed = type("Args", (), {"lr": [3e-4], **{name: o.default for name, o in options.items()}, "radam_no_sgd": True})
    kwargs = optimizer_kwargs(OPTIMIZERS["radam"], parsed)
    assert kwargs == {
        "lr": 3e-4,
        "betas": (0.9, 0.999),
        "eps": 1e-8,
        "weight_decay": 0.0,
        "decoupled_weight_decay": True,
        "eps_placement": "sqrt_v",
        "threshold": 5.0,
        "degenerated_to_sgd": False,
    }
    OPTIMIZERS["radam"].cls([torch.nn.Parameter(torch.zeros(1))], **kwargs)  # what the plugin constructs
