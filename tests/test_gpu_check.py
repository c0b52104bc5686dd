"""The GPU check (benchmarks/gpu_check.py): its FLOPs formula, peak table, optimizer factory, and its CPU dry run."""

from __future__ import annotations

import json
import math
import os
import statistics
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from benchmarks.gpu_check import (
    PROBE_VARIANTS,
    SECTIONS,
    build_optimizer,
    iwslt_architecture,
    iwslt_like_batches,
    peak_bf16_flops,
    transformer_train_flops,
)
from radam_repro import optim
from radam_repro.models.transformer import Transformer

ROOT = Path(__file__).resolve().parents[1]


def run_check(out: Path, *args: str, env: dict | None = None) -> tuple[subprocess.CompletedProcess, dict]:
    """``python -m benchmarks.gpu_check --dry-run --out <out> <args>`` as a user runs it; (process, JSON)."""
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks.gpu_check",
            "--dry-run",
            "--out",
            str(out),
            "--cifar-dir",
            str(out / "no_cifar"),
            *args,
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})},
        timeout=300,
    )
    path = out / "gpu_check.json"
    assert path.is_file(), f"no {path}:\nSTDOUT:\n{proc.stdout[-3000:]}\nSTDERR:\n{proc.stderr[-3000:]}"
    return proc, json.loads(path.read_text())


def test_flops_formula_matches_flop_counter_on_the_matmuls():
    """6·N·tokens + attention: the matmul part equals FlopCounterMode's count of a real training step.

    On the CPU FlopCounterMode does not count scaled_dot_product_attention, so the attention term
    3·4·B·d·(Le·S² + Ld·(T² + T·S)) is added to its count.
    """
    torch.manual_seed(0)
    arch = iwslt_architecture(dry=True)
    model = Transformer(arch)
    batch = iwslt_like_batches(1, 200, (arch.src_vocab_size, arch.tgt_vocab_size), 40, "cpu")[0]
    (b, s), t = batch["src_tokens"].shape, batch["target"].shape[1]
    counter = FlopCounterMode(display=False)
    with counter:
        model(batch["src_tokens"], batch["prev_output_tokens"]).float().sum().backward()
    attention = 3 * 4 * b * arch.d_model * (arch.encoder_layers * s * s + arch.decoder_layers * (t * t + t * s))
    assert counter.get_total_flops() + attention == transformer_train_flops(arch, arch.tgt_vocab_size, b, s, t)


def test_iwslt_like_batches_pack_at_most_max_tokens_with_padding_after_eos():
    batches = iwslt_like_batches(4, 400, (300, 200), 60, "cpu")
    for batch in batches:
        target = batch["target"]
        assert target.numel() <= 400 and batch["src_tokens"].numel() <= 400
        lengths = target.ne(1).sum(1)
        assert (target[torch.arange(len(target)), lengths - 1] == 2).all()  # </s> ends every sentence
        assert int(batch["ntokens"]) == int(lengths.sum())
        assert torch.equal(batch["prev_output_tokens"][:, 0], torch.full((len(target),), 2))


@pytest.mark.parametrize(
    "name, peak",
    [
        ("NVIDIA H100 80GB HBM3", 989e12),
        ("NVIDIA H100 PCIe", 756e12),
        ("NVIDIA H100 NVL", 835e12),
        ("NVIDIA H200", 989e12),
        ("NVIDIA GH200 480GB", 989e12),
        ("NVIDIA A100-SXM4-80GB", 312e12),
        ("NVIDIA L40S", 362e12),
        ("NVIDIA L4", 121e12),
        ("Tesla T4", None),
    ],
)
def test_peak_table_picks_the_specific_model_before_its_prefix(name, peak):
    assert peak_bf16_flops(name) == peak


def test_build_optimizer_passes_fused_only_where_the_class_accepts_it():
    params = [torch.nn.Parameter(torch.randn(3, 2))]
    sgd = build_optimizer({"algorithm": "sgd", "lr": 0.1, "momentum": 0.9}, params, fused=True)
    assert isinstance(sgd, torch.optim.SGD) and sgd.defaults["fused"] and sgd.defaults["momentum"] == 0.9
    radam = build_optimizer({"algorithm": "radam", "lr": 1e-3, "eps": 1e-4}, params, fused=True)
    assert type(radam) is optim.RAdam and radam.defaults["eps"] == 1e-4


@pytest.mark.slow  # moved out of the default suite (<= 10 min on the slower 2-core AMD EPYC): CI runs it
def test_single_section_dry_run_through_the_cli(tmp_path):
    proc, report = run_check(tmp_path, "--sections", "optimizer")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert list(report["sections"]) == ["optimizer"]
    section = report["sections"]["optimizer"]
    assert section["status"] == "ok" and set(section["formulas"]) >= {"ms_per_step", "vs_torch_fused"}
    rows = section["rows"]
    assert {r["optimizer"] for r in rows} == {"torch.Adam(fused)", "torch.Adam(foreach)", *optim.OPTIMIZERS}
    assert {r["dtype"] for r in rows} == {"float32", "bfloat16"}
    for dtype in ("float32", "bfloat16"):
        same = {r["optimizer"]: r for r in rows if r["dtype"] == dtype}
        for row in same.values():
            assert row["ms_per_step"] > 0
            assert row["vs_torch_fused"] == pytest.approx(row["ms_per_step"] / same["torch.Adam(fused)"]["ms_per_step"])
            assert row["vs_torch_foreach"] == pytest.approx(
                row["ms_per_step"] / same["torch.Adam(foreach)"]["ms_per_step"]
            )
    assert "optimizer" in proc.stdout and "ms_per_step" in proc.stdout  # the table is printed as it comes


@pytest.mark.slow
def test_full_dry_run_records_every_section_and_survives_a_failing_one(tmp_path):
    """Every section runs at toy sizes; one made to fail (GPU_CHECK_FAIL) is recorded and the rest still run."""
    proc, report = run_check(tmp_path, env={"GPU_CHECK_FAIL": "nmt"})
    assert proc.returncode == 1  # a failed section makes the exit status non-zero
    meta = report["meta"]
    assert meta["dry_run"] and meta["torch"] == torch.__version__ and meta["device_name"] and meta["total_s"] < 120
    assert list(report["sections"]) == list(SECTIONS)
    failed = report["sections"]["nmt"]
    assert failed["status"] == "error" and "GPU_CHECK_FAIL=nmt" in failed["error"]
    assert "Traceback" in failed["traceback"] and "nmt" in proc.stdout

    for name in ("optimizer", "cifar", "lm", "probe"):
        section = report["sections"][name]
        assert section["status"] == "ok", (name, section.get("error"), section.get("traceback"))
        assert section["formulas"] and section["rows"] and section["seconds"] > 0
    cifar = report["sections"]["cifar"]["rows"]
    assert [r["batch"] for r in cifar] == [8, 32] and all(r["img_per_s"] > 0 for r in cifar)
    assert "random uint8 images" in " ".join(report["sections"]["cifar"]["notes"])
    lm = report["sections"]["lm"]["rows"]
    assert lm[0]["tokens_per_s"] > 0 and lm[0]["steps"] >= 1

    probe = report["sections"]["probe"]["rows"]
    variants, verdict = probe[:-1], probe[-1]
    assert [r["variant"] for r in variants] == list(PROBE_VARIANTS)
    # every variant runs as many updates as Adam-vanilla, unless the section's budget ran out first (a loaded
    # machine): then the section says so in its notes
    notes = " ".join(report["sections"]["probe"]["notes"])
    full = [r["updates"] for r in variants if f"{r['variant']}: budget spent" not in notes]
    assert full[0] == variants[0]["updates"] and len(set(full)) == 1
    eps = {r["variant"]: r["eps"] for r in variants}
    assert eps["adam_eps"] == 1e-4 and eps["adam"] == 1e-8  # the paper's recipes, composed
    for row in variants:
        assert row["nll_curve"] and all(math.isfinite(nll) for _, nll in row["nll_curve"])
        assert all(0 <= frac <= 1 for _, *fracs in row["frac_curve"] for frac in fracs)
        assert row["escaped"] == (row["final_nll"] < 0.5 * math.log(32))
    assert verdict["adam_eps_escapes_where_adam_vanilla_does_not"] in ("yes", "no")

    again, nmt = run_check(tmp_path / "nmt", "--sections", "nmt")  # the section that was made to fail, for real
    assert again.returncode == 0, again.stderr[-3000:]
    rows = nmt["sections"]["nmt"]["rows"]
    assert rows[0]["formula"] > 0 and rows[1]["tokens_per_s"] > 0 and rows[1]["mfu"] is None  # no peak on a CPU
    assert "3·B·" in nmt["sections"]["nmt"]["formulas"]["flops_per_step"]


@pytest.mark.slow  # a longer real run: CI runs it (.ci/run selects every marker)
def test_paper_nmt_section_dry_run_extrapolates_from_the_clis_logged_rate(tmp_path, iwslt):
    """experiment=paper_nmt through the real CLI (tiny model, CPU) until 4 training rows: rate and extrapolation."""
    proc, report = run_check(tmp_path, "--sections", "paper_nmt", "--iwslt-dir", str(iwslt))
    section = report["sections"]["paper_nmt"]
    assert proc.returncode == 0 and section["status"] == "ok", (section.get("error"), proc.stderr[-3000:])
    [row] = section["rows"]
    rows = [json.loads(line) for line in (tmp_path / "paper_nmt_run" / "metrics.jsonl").read_text().splitlines()]
    read = [r["steps_per_s"] for r in rows if r.get("split") == "train" and r["step"] <= row["updates"]]
    assert len(read) >= 4 and row["updates_per_s"] == pytest.approx(statistics.median(read[2:]))
    assert row["hours_70k"] == pytest.approx(70_000 / row["updates_per_s"] / 3600)
    assert row["experiment_gpu_hours"] == pytest.approx(row["hours_70k"] * (25 + 5 * 72 / 70))
    config = (tmp_path / "paper_nmt_run" / "config.yaml").read_text()
    assert "name: radam" in config and "max_update: 70000" in config  # the paper's recipe, only the model shrunk
