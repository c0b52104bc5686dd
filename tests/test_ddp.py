"""DistributedDataParallel on the CPU (gloo): 2 processes on one global batch train as 1 process does.

Real runs of ``task=nmt_synthetic`` (all sentences the same length, no BatchNorm, no dropout) through
the CLI: ``trainer.devices=2`` (the harness spawns its ranks) and ``torchrun --nproc_per_node=2``.
Not bit-exact: each rank sums its half of the batch's token gradients and gloo adds the two halves,
a different float summation order than one process summing all rows (and GEMMs of 32 vs 64 rows).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from conftest import ROOT, data_root, run_cli

SMALL = [
    "task=nmt_synthetic",
    "optimizer=radam",
    "task.model.layers=1",
    "trainer.max_steps=20",
    "trainer.log_every=4",
    "trainer.eval_every=10",
    "trainer.checkpoint_every=10",
    "trainer.keep_checkpoints=2",
]
DDP = ["trainer.devices=2", "trainer.device=cpu"]
TOKENS_PER_BATCH = 64 * 13  # batch_size sentences of length + </s> target tokens


def run_folder(runs: Path) -> Path:
    (summary,) = list(runs.rglob("summary.json"))  # one run folder: ranks other than 0 write none
    return summary.parent


def read_rows(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def loss_rows(run: Path, split: str = "train") -> dict[int, dict]:
    rows = [r for r in read_rows(run) if r["split"] == split and "loss" in r]
    steps = [r["step"] for r in rows]
    assert len(steps) == len(set(steps)), f"duplicate {split} rows: {steps}"
    return {r["step"]: r for r in rows}


def final_weights(run: Path) -> dict[str, torch.Tensor]:
    return torch.load(run / "checkpoints" / "latest.pt", weights_only=False)["model"]


def assert_same_training(single: Path, ddp: Path) -> None:
    train_1, train_2 = loss_rows(single), loss_rows(ddp)
    assert sorted(train_2) == sorted(train_1) == [4, 8, 12, 16, 20]
    for step, row in train_1.items():
        assert train_2[step]["loss"] == pytest.approx(row["loss"], rel=1e-5), step
        assert train_2[step]["nll_loss"] == pytest.approx(row["nll_loss"], rel=1e-5), step
        assert train_2[step]["ntokens"] == row["ntokens"] == TOKENS_PER_BATCH  # shards' counts add up
    valid_1, valid_2 = loss_rows(single, "valid"), loss_rows(ddp, "valid")
    assert sorted(valid_2) == sorted(valid_1) == [10, 20]
    for step, row in valid_1.items():
        assert valid_2[step]["loss"] == pytest.approx(row["loss"], rel=1e-5), step
    weights_1, weights_2 = final_weights(single), final_weights(ddp)
    assert weights_1.keys() == weights_2.keys()
    for name, value in weights_1.items():
        if name.endswith("in_proj_bias"):
            # The key bias has an exactly zero gradient (softmax ignores the shift q·b_k shared by a
            # row's scores), so its gradient is rounding noise that Adam turns into steps of lr·g/eps:
            # it differs between any two summation orders. Query and value biases must agree.
            d = len(value) // 3
            torch.testing.assert_close(weights_2[name][d : 2 * d], value[d : 2 * d], rtol=0, atol=1e-3)
            value, other = (
                torch.cat([value[:d], value[2 * d :]]),
                torch.cat([weights_2[name][:d], weights_2[name][2 * d :]]),
            )
        else:
            other = weights_2[name]
        torch.testing.assert_close(other, value, rtol=1e-5, atol=1e-6, msg=name)


@pytest.fixture(scope="module")
def single(tmp_path_factory) -> Path:
    runs = tmp_path_factory.mktemp("single")
    run_cli(*SMALL, runs=runs)
    return run_folder(runs)


@pytest.fixture(scope="module")
def ddp(tmp_path_factory) -> Path:
    runs = tmp_path_factory.mktemp("ddp")
    run_cli(*SMALL, *DDP, runs=runs)
    return run_folder(runs)


def test_two_spawned_processes_train_as_one_process_on_the_same_global_batch(single, ddp):
    assert_same_training(single, ddp)
    assert json.loads((single / "meta.json").read_text())["world_size"] == 1
    assert json.loads((ddp / "meta.json").read_text())["world_size"] == 2
    assert json.loads((ddp / "summary.json").read_text())["status"] == "completed"
    rows = read_rows(ddp)
    keys = [(r["step"], r["split"], tuple(sorted(r))) for r in rows]
    assert len(keys) == len(set(keys)), "a row was logged twice"
    checkpoint = torch.load(ddp / "checkpoints" / "latest.pt", weights_only=False)
    rank_0, rank_1 = checkpoint["ranks"]  # each rank's own RNG: two processes really ran
    assert not torch.equal(rank_0["rng"]["torch"], rank_1["rng"]["torch"])


@pytest.mark.slow  # moved out of the default suite (<= 10 min on the slower 2-core AMD EPYC): CI runs it
def test_torchrun_launch_trains_the_same(tmp_path, single):
    runs = tmp_path / "runs"
    env = {
        **os.environ,
        "RADAM_REPRO_RUNS": str(runs),
        "RADAM_REPRO_DATA": str(data_root()),
        "OMP_NUM_THREADS": "1",
        "HYDRA_FULL_ERROR": "1",
        "TQDM_DISABLE": "1",
    }
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        "-m",
        "radam_repro",
        *SMALL,
        "trainer.device=cpu",
        "trainer.threads=1",
        "trainer.progress=false",
    ]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-5000:]
    run = run_folder(runs)
    assert json.loads((run / "meta.json").read_text())["world_size"] == 2
    assert_same_training(single, run)


@pytest.mark.slow  # moved out of the default suite (<= 10 min on the slower 2-core AMD EPYC): CI runs it
def test_ddp_resume_from_a_step_checkpoint_is_bit_identical(tmp_path, ddp):
    resumed = tmp_path / "resumed"
    (resumed / "checkpoints").mkdir(parents=True)
    shutil.copy(ddp / "checkpoints" / "step_0000010.pt", resumed / "checkpoints" / "latest.pt")
    proc = run_cli(*SMALL, *DDP, f"hydra.run.dir={resumed}", runs=tmp_path / "runs")
    assert f"resuming {resumed} from step 10" in proc.stdout
    original, again = loss_rows(ddp), loss_rows(resumed)
    assert sorted(again) == [12, 16, 20]
    for step in again:  # step 12 averages losses of steps 9-10 kept per rank in the checkpoint
        assert again[step]["loss"] == original[step]["loss"], step
    for name, value in final_weights(ddp).items():
        assert torch.equal(final_weights(resumed)[name], value), name


@pytest.mark.slow  # moved out of the default suite (<= 10 min on the slower 2-core AMD EPYC): CI runs it
def test_resuming_with_another_process_count_names_the_fix(tmp_path, ddp):
    folder = tmp_path / "one_process"
    (folder / "checkpoints").mkdir(parents=True)
    shutil.copy(ddp / "checkpoints" / "latest.pt", folder / "checkpoints" / "latest.pt")
    proc = run_cli(*SMALL, f"hydra.run.dir={folder}", runs=tmp_path / "runs", check=False)
    assert proc.returncode != 0
    assert "written by 2 DDP process(es)" in proc.stderr and "trainer.devices=2" in proc.stderr


def test_nmt_shards_give_the_global_gradient_even_when_uneven():
    """Token-count normalisation: 5 sentences of different lengths over 2 ranks, mean of the shard gradients."""
    from omegaconf import OmegaConf

    from radam_repro.data.bilingual import PAD
    from radam_repro.tasks.translation import TranslationTask, build_transformer, shard_sentences

    torch.manual_seed(0)
    arch = OmegaConf.create(
        {
            "layers": 1,
            "encoder_layers": 1,
            "decoder_layers": 1,
            "d_model": 16,
            "ffn_dim": 32,
            "heads": 2,
            "dropout": 0.0,
            "attention_dropout": 0.0,
            "activation_dropout": 0.0,
            "pre_norm": False,
            "share_decoder_input_output_embed": False,
            "share_all_embeddings": False,
            "max_positions": 64,
        }
    )
    model = build_transformer(arch, 20, 20).double()
    task = SimpleNamespace(cfg=SimpleNamespace(label_smoothing=0.1), token_accuracy=False)
    lengths = [7, 3, 5, 2, 6]
    target = torch.full((5, 7), PAD)
    for i, n in enumerate(lengths):
        target[i, :n] = torch.randint(4, 20, (n,))
    src = torch.randint(4, 20, (5, 6))
    batch = {
        "src_tokens": src,
        "prev_output_tokens": target.roll(1, 1),
        "target": target,
        "ntokens": target.ne(PAD).sum(),
    }

    def gradient(b: dict) -> torch.Tensor:
        model.zero_grad()
        TranslationTask.loss(task, model, b)[0].backward()
        return torch.cat([p.grad.flatten() for p in model.parameters()])

    shards = [shard_sentences(batch, r, 2) for r in range(2)]
    assert [len(s["target"]) for s in shards] == [2, 3]
    assert sum(s["ntokens"] for s in shards) == sum(lengths)
    ddp_gradient = (gradient(shards[0]) + gradient(shards[1])) / 2  # what DDP's all-reduce average gives
    torch.testing.assert_close(ddp_gradient, gradient(batch), rtol=1e-10, atol=1e-12)
    with pytest.raises(ValueError, match="cannot feed 8 processes"):
        shard_sentences(batch, 0, 8)


def test_default_and_language_model_shards():
    from radam_repro.data.lm1b import LMBatch
    from radam_repro.tasks.base import Task
    from radam_repro.tasks.language_model import LanguageModelTask

    images, labels = torch.arange(24.0).reshape(6, 4), torch.arange(6)
    part = Task().shard((images, labels), 1, 3)
    assert torch.equal(part[0], images[2:4]) and torch.equal(part[1], labels[2:4])
    with pytest.raises(ValueError, match="multiple of trainer.devices"):
        Task().shard((images, labels), 0, 4)
    with pytest.raises(ValueError, match="override the task's shard"):
        Task().shard({"x": images, "count": torch.tensor(6)}, 0, 2)
    window = LMBatch(torch.arange(12).reshape(3, 4), torch.arange(12).reshape(3, 4) + 1, reset=True, epoch=0, index=5)
    streams = LanguageModelTask.shard(None, window, 1, 2)  # columns are the independent token streams
    assert torch.equal(streams.inputs, window.inputs[:, 2:]) and torch.equal(streams.targets, window.targets[:, 2:])
    assert (streams.reset, streams.epoch, streams.index) == (True, 0, 5)
