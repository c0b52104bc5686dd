"""Results you can trust, round 2 (issue 21): damaged files are refused by name, a live run is never taken over,
a blow-up is ``diverged``. Through the real CLI where a user meets the problem."""

from __future__ import annotations

import json
import stat

import pytest
from conftest import data_root
from test_trust import cli


# -- 8. every cache file follows the user's umask ------------------------------------------------------------------
def test_lm_caches_follow_the_umask(tmp_path):
    shard = data_root() / "lm1b/1-billion-word-language-modeling-benchmark-r13output"
    if not shard.is_dir():
        pytest.skip(f"needs the staged lm1b held-out shard at {shard}")
    run = tmp_path / "run"
    cli("task=lm1b_small", "optimizer=adam", "trainer.max_steps=1", "trainer.eval_every=1", run_dir=run, umask=0o027)
    cached = [p for p in (tmp_path / "cache").rglob("*") if p.is_file()]
    assert any(p.suffix == ".npy" for p in cached) and any("vocab" in p.name for p in cached), cached
    assert {p.name: stat.S_IMODE(p.stat().st_mode) for p in cached} == {p.name: 0o640 for p in cached}


def strict(text: str):
    def refuse(constant):
        raise ValueError(f"bare {constant} in strict JSON")

    return json.loads(text, parse_constant=refuse)


# -- 6. a blown-up evaluation is `diverged`, not `failed` -----------------------------------------------------------
def test_an_overflowing_evaluation_is_diverged_with_infinite_ppl(tmp_path):
    run = tmp_path / "run"
    args = ("task=nmt_synthetic", "task.model.layers=1", "optimizer=adam", "optimizer.lr=10", "trainer.max_steps=30")
    proc = cli(*args, "trainer.eval_every=1", run_dir=run)
    summary = strict((run / "summary.json").read_text())
    assert summary["status"] == "diverged" and summary["error"] is None, summary
    assert summary["diverged_step"] == 1 and summary["final"]["valid/ppl"] == "Infinity"
    assert "diverged: non-finite evaluation at step 1" in proc.stdout
    (valid,) = [strict(line) for line in (run / "metrics.jsonl").read_text().splitlines() if '"valid"' in line]
    assert valid["step"] == 1 and valid["ppl"] == "Infinity" and valid["loss"] > 700  # exp(nll) overflows a double
