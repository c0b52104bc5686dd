"""Task lm1b_small through the real CLI: perplexity falls below the unigram baseline's neighbourhood."""

from __future__ import annotations

import json

import pytest
from conftest import data_root


@pytest.fixture(scope="module")
def heldout_shard():
    path = (
        data_root()
        / "lm1b/1-billion-word-language-modeling-benchmark-r13output/heldout-monolingual.tokenized.shuffled"
        / "news.en.heldout-00000-of-00050"
    )
    if not path.is_file():
        pytest.skip(f"staged One-Billion-Word shard not found at {path}")
    return path


@pytest.mark.slow  # a longer real run: CI runs it (.ci/run selects every marker)
def test_lm1b_small_perplexity_falls_through_the_cli(cli, heldout_shard):
    cli("task=lm1b_small", "optimizer=radam", "trainer.max_steps=120", "trainer.eval_every=40", "trainer.log_every=20")
    (summary_path,) = list(cli.runs.rglob("summary.json"))
    summary = json.loads(summary_path.read_text())
    assert summary["status"] == "completed"
    rows = [json.loads(line) for line in (summary_path.parent / "metrics.jsonl").read_text().splitlines()]
    ppl = [r["ppl"] for r in rows if r["split"] == "valid"]
    assert len(ppl) == 3 and ppl[0] > ppl[1] > ppl[2] == summary["final"]["valid/ppl"]
    train = [r["loss"] for r in rows if r["split"] == "train" and "loss" in r]
    assert train[-1] < train[0] - 0.5
