"""The early diagnostics (update size, angle, RMS; top Hessian eigenvalue) against direct computation."""

from __future__ import annotations

import json
import math

import pytest
import torch
from conftest import run_cli

from radam_repro.loggers.diagnostics import UpdateSize, angle, top_hessian_eigenvalue
from radam_repro.optim import Adam


def small_model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3))


def flat(tensors) -> torch.Tensor:
    return torch.cat([t.detach().double().flatten() for t in tensors])


def test_update_size_matches_direct_computation_overall_and_per_weight_matrix():
    model = small_model()
    opt = Adam(model.parameters(), lr=0.05)
    size = UpdateSize(dict(model.named_parameters()))
    model(torch.randn(16, 6)).square().mean().backward()
    before = {n: p.detach().double().clone() for n, p in model.named_parameters()}
    size.before()
    opt.step()
    stats = {k: v.item() for k, v in size.after().items()}
    after = {n: p.detach().double() for n, p in model.named_parameters()}

    old, new = flat(before.values()), flat(after.values())
    assert stats["update/relative"] == pytest.approx(((new - old).norm() / old.norm()).item(), rel=1e-5)
    cosine = (old @ new / (old.norm() * new.norm())).item()
    assert stats["update/angle"] == pytest.approx(math.acos(cosine), rel=1e-4)
    assert stats["update/rms"] == pytest.approx((new - old).square().mean().sqrt().item(), rel=1e-5)
    for name in ("0.weight", "2.weight"):
        a, b = before[name].flatten(), after[name].flatten()
        assert stats[f"update/relative/{name}"] == pytest.approx(((b - a).norm() / a.norm()).item(), rel=1e-5)
        assert stats[f"update/angle/{name}"] == pytest.approx(math.acos(a @ b / (a.norm() * b.norm())), rel=1e-4)
    assert not any(key.endswith(".bias") for key in stats)  # biases: per layer only weight matrices
    assert stats["update/angle_max"] == max(stats["update/angle/0.weight"], stats["update/angle/2.weight"])
    assert stats["update/relative_max"] == max(stats["update/relative/0.weight"], stats["update/relative/2.weight"])


def test_angle_keeps_tiny_angles_that_arccos_of_the_cosine_loses():
    a = torch.zeros(1000)
    a[0] = 1.0
    b = a.clone()
    b[1] = 1e-5  # an angle of atan(1e-5)
    ours = angle([a], [b], a.norm(), b.norm()).item()
    assert ours == pytest.approx(math.atan(1e-5), rel=1e-4)
    assert torch.arccos(a @ b / (a.norm() * b.norm())).item() == 0.0  # float32's cosine rounds to 1


def test_power_iteration_matches_eigvalsh_of_the_explicit_hessian():
    torch.manual_seed(1)
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 2)).double()
    x, y = torch.randn(10, 3, dtype=torch.float64), torch.randn(10, 2, dtype=torch.float64)
    names = [n for n, _ in model.named_parameters()]
    shapes = [p.shape for p in model.parameters()]
    theta = flat(model.parameters())

    def loss_of_flat(vector):
        pieces = torch.split(vector, [math.prod(s) for s in shapes])
        params = {n: piece.view(s) for n, piece, s in zip(names, pieces, shapes)}
        return (torch.func.functional_call(model, params, (x,)) - y).square().mean()

    eigenvalues = torch.linalg.eigvalsh(torch.autograd.functional.hessian(loss_of_flat, theta))
    expected = eigenvalues[eigenvalues.abs().argmax()].item()
    params = list(model.parameters())
    ours = top_hessian_eigenvalue(
        lambda: (model(x) - y).square().mean(), params, iters=300, generator=torch.Generator().manual_seed(0)
    )
    assert ours.item() == pytest.approx(expected, rel=1e-6)
    assert all(p.grad is None for p in params)  # the training gradients are not touched


def test_training_logs_the_diagnostics_and_the_hessian_flag_changes_nothing_else(tmp_path):
    base = ("task=nmt_synthetic", "optimizer=adam_gi", "task.model.layers=1", "trainer.max_steps=6")
    rows = {}
    for iters in (0, 3):
        runs = tmp_path / f"hessian{iters}"
        run_cli(*base, "trainer.log_every=3", f"trainer.hessian_power_iters={iters}", runs=runs)
        (metrics,) = runs.rglob("metrics.jsonl")
        rows[iters] = [json.loads(line) for line in metrics.read_text().splitlines()]
    train = [r for r in rows[3] if r["split"] == "train" and "loss" in r]
    assert [r["step"] for r in train] == [3, 6]
    for row in train:
        assert 0 < row["update/relative"] < 1 and 0 < row["update/angle"] < math.pi / 2 and row["update/rms"] > 0
        assert any(key.startswith("update/angle/") for key in row)
    hessian = {r["step"]: r["hessian/top_eigenvalue"] for r in rows[3] if "hessian/top_eigenvalue" in r}
    assert sorted(hessian) == [1, 5] and all(math.isfinite(v) and v != 0 for v in hessian.values())
    assert not any("hessian/top_eigenvalue" in r for r in rows[0])
    losses = {iters: [r["loss"] for r in rs if r["split"] == "train" and "loss" in r] for iters, rs in rows.items()}
    assert losses[0] == losses[3]  # the power iteration leaves the RNGs and the trajectory alone


def test_a_negative_number_of_power_iterations_names_the_key():
    from hydra import compose, initialize_config_dir
    from test_trust import ROOT

    from radam_repro.config import register, without_foreign_optimizer_schemas
    from radam_repro.train import validate

    register()
    with (
        without_foreign_optimizer_schemas(),
        initialize_config_dir(str(ROOT / "radam_repro/configs"), version_base="1.3"),
    ):
        cfg = compose("radam_repro", overrides=["task=nmt_synthetic", "trainer.hessian_power_iters=-1"])
    with pytest.raises(ValueError, match=r"trainer.hessian_power_iters=-1 must be >= 0 \(0: off\)"):
        validate(cfg)
