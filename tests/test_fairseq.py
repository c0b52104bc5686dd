"""fairseq as the oracle: data-bin folders, checkpoints both ways, beam search, lr schedules, our optimizers in it.

Everything runs real fairseq (the ``[fairseq]`` extra): ``fairseq-preprocess`` on staged text, ``fairseq-train``
with a small ``transformer`` (the code path of ``transformer_iwslt_de_en``), ``fairseq-generate``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import ROOT, run_cli

INSTALL = "pip install cython && pip install --no-build-isolation -e '.[fairseq]'"
fairseq = pytest.importorskip("fairseq", reason=f"fairseq is not installed; run `{INSTALL}` (README 'fairseq users')")

from fairseq import checkpoint_utils  # noqa: E402
from fairseq.criterions.label_smoothed_cross_entropy import label_smoothed_nll_loss as fairseq_ls_loss  # noqa: E402
from fairseq.data import Dictionary as FairseqDictionary  # noqa: E402
from fairseq.data.indexed_dataset import MMapIndexedDataset  # noqa: E402

from radam_repro.data.bilingual import PAD, collate, load_bilingual, read_lines  # noqa: E402
from radam_repro.data.fairseq_binarized import load_data_bin, read_indexed  # noqa: E402
from radam_repro.models import fairseq_checkpoint  # noqa: E402
from radam_repro.models.sequence_generator import beam_search  # noqa: E402
from radam_repro.optim.schedules import Decay, Schedule  # noqa: E402
from radam_repro.tasks.translation import label_smoothed_nll_loss  # noqa: E402

pytestmark = pytest.mark.fairseq
torch.set_num_threads(1)

PLUGIN = ROOT / "radam_repro" / "fairseq_plugin"
ARCH = shlex.split(
    "--arch transformer --encoder-embed-dim 64 --decoder-embed-dim 64 --encoder-ffn-embed-dim 128 "
    "--decoder-ffn-embed-dim 128 --encoder-layers 2 --decoder-layers 2 --encoder-attention-heads 4 "
    "--decoder-attention-heads 4 --share-all-embeddings"
)
OUR_ARCH = ["task.model.d_model=64", "task.model.ffn_dim=128", "task.model.layers=2", "task.model.heads=4"]
N_SENTENCES = 200  # Multi30k test sentences the small model is trained (overfitted) and decoded on
UPDATES = 300


def fairseq_cli(tool: str, *args: str, cwd: Path) -> str:
    """A fairseq console command on one thread; the plugin imports this checkout's radam_repro."""
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    }
    # the console script beside this interpreter: its environment's, whether or not that environment is activated
    command = str(Path(sys.executable).parent / tool)
    proc = subprocess.run([command, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    if proc.returncode:
        raise AssertionError(f"{tool} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}")
    return proc.stdout + proc.stderr


def preprocess(out: Path, prefixes: dict[str, Path], src: str, tgt: str, *extra: str) -> Path:
    args = ["--source-lang", src, "--target-lang", tgt, "--destdir", str(out), "--workers", "1", *extra]
    for split, prefix in prefixes.items():
        args += [f"--{split}pref", str(prefix)]
    fairseq_cli("fairseq-preprocess", *args, cwd=out.parent)
    return out


def head(source: Path, target: Path, n: int) -> None:
    target.write_text("".join(line + "\n" for line in read_lines(source)[:n]), encoding="utf-8")


@pytest.fixture(scope="module")
def iwslt_bin(iwslt, tmp_path_factory) -> Path:
    """The staged IWSLT'14 (BPE) with valid as the training split, binarised by fairseq-preprocess."""
    out = tmp_path_factory.mktemp("iwslt") / "data-bin"
    return preprocess(out, {"train": iwslt / "valid", "test": iwslt / "test"}, "de", "en")


@pytest.fixture(scope="module")
def small(multi30k, tmp_path_factory) -> dict[str, Path]:
    """Multi30k's first test sentences (joined dictionary, words seen once -> <unk>), a small transformer fitted to them
    with our RAdam through the plugin (the paper's recipe: no warmup, linear decay, label smoothing 0.1)."""
    root = tmp_path_factory.mktemp("small")
    for lang in ("de", "en"):
        head(multi30k / f"test_2016_flickr.lc.norm.tok.{lang}", root / f"text.{lang}", N_SENTENCES)
    splits = {split: root / "text" for split in ("train", "valid", "test")}
    data = preprocess(root / "data-bin", splits, "de", "en", "--joined-dictionary", "--thresholdsrc", "2")
    recipe = shlex.split(
        f"--cpu --seed 1 --dropout 0.0 --optimizer radam_repro_radam --adam-betas '(0.9, 0.98)' --lr 3e-3 "
        f"--lr-scheduler polynomial_decay --total-num-update {UPDATES} --end-learning-rate 1e-9 --weight-decay 1e-4 "
        f"--clip-norm 25 --criterion label_smoothed_cross_entropy --label-smoothing 0.1 --max-tokens 1000 "
        f"--max-update {UPDATES} --keep-last-epochs 2 --disable-validation"
    )
    checkpoints = root / "checkpoints"
    fairseq_cli(
        "fairseq-train", str(data), "--user-dir", str(PLUGIN), *ARCH, *recipe, "--save-dir", str(checkpoints), cwd=root
    )
    return {"root": root, "data": data, "checkpoints": checkpoints, "last": checkpoints / "checkpoint_last.pt"}


def fairseq_models(paths: list[Path], data: Path):
    """fairseq's own models from fairseq checkpoints (its torch.load runs under our allow-list)."""
    with torch.serialization.safe_globals(fairseq_checkpoint.SAFE_GLOBALS):
        models, _, task = checkpoint_utils.load_model_ensemble_and_task(
            [str(p) for p in paths], arg_overrides={"data": str(data)}
        )
    return models, task


# --- data-bin ---------------------------------------------------------------------------------------------


def test_data_bin_reader_gives_fairseqs_ids_and_dictionaries(iwslt, iwslt_bin, tmp_path):
    """Our numpy reader equals fairseq's MMapIndexedDataset and Dictionary, and our text pipeline."""
    data = load_data_bin(iwslt_bin, "de", "en", ["train", "test"])
    text = load_bilingual(iwslt, "de", "en", splits=["valid", "test"], dict_split="valid", cache_dir=tmp_path)
    for lang, ours, from_text in (("de", data.src_dict, text.src_dict), ("en", data.tgt_dict, text.tgt_dict)):
        theirs = FairseqDictionary.load(str(iwslt_bin / f"dict.{lang}.txt"))
        assert ours.symbols == theirs.symbols == from_text.symbols and ours.counts[4:] == theirs.count[4:]
    for split, text_split in (("train", "valid"), ("test", "test")):
        for lang, side, text_side in (("de", "src", "src"), ("en", "tgt", "tgt")):
            theirs = MMapIndexedDataset(str(iwslt_bin / f"{split}.de-en.{lang}"))
            ours = getattr(data.splits[split], side)
            assert len(ours) == len(theirs) == len(getattr(text.splits[text_split], text_side))
            assert np.array_equal(ours.lengths, theirs.sizes)
            assert torch.equal(ours.tokens.long(), torch.cat([theirs[i] for i in range(len(theirs))]).long())
            assert torch.equal(ours.tokens, getattr(text.splits[text_split], text_side).tokens)
    # the test split has words unseen in valid: <unk> (3), decoded as fairseq-generate prints targets
    assert int((data.splits["test"].tgt.tokens == 3).sum()) > 0
    assert data.lines("test", "en")[0] == FairseqDictionary.load(str(iwslt_bin / "dict.en.txt")).string(
        MMapIndexedDataset(str(iwslt_bin / "test.de-en.en"))[0], escape_unk=True
    )


@pytest.mark.slow  # uses the small model fairseq-train fits (~1.5 min once per module)
def test_data_bin_reader_joined_dictionary_threshold_and_errors(small, tmp_path):
    """Multi30k with a joined dictionary and --thresholdsrc 2 (words seen once -> <unk>), read back exactly."""
    data = load_data_bin(small["data"], "de", "en", ["train", "test"])
    assert (
        data.src_dict.symbols
        == data.tgt_dict.symbols
        == FairseqDictionary.load(str(small["data"] / "dict.de.txt")).symbols
    )
    for lang, side in (("de", data.splits["test"].src), ("en", data.splits["test"].tgt)):
        theirs = MMapIndexedDataset(str(small["data"] / f"test.de-en.{lang}"))
        assert [side[i].tolist() for i in range(len(side))] == [theirs[i].tolist() for i in range(len(theirs))]
        assert int((side.tokens == 3).sum()) > 0
    with pytest.raises(FileNotFoundError, match=r"lacks dev\.de-en.*fairseq-preprocess"):
        load_data_bin(small["data"], "de", "en", ["dev"])
    (tmp_path / "bad.idx").write_bytes(b"TNTIDX\x00\x00" + bytes(32))
    with pytest.raises(ValueError, match="not a fairseq mmap index"):
        read_indexed(tmp_path / "bad")


# --- checkpoints ------------------------------------------------------------------------------------------


def parity_batch(small) -> dict[str, torch.Tensor]:
    data = load_data_bin(small["data"], "de", "en", ["test"])
    return collate(data.splits["test"], np.arange(24))


@pytest.mark.slow  # uses the small model fairseq-train fits (~1.5 min once per module)
def test_imported_checkpoint_matches_fairseq_logits_loss_and_gradients(small):
    """Same weights (train mode, dropout 0): float32 logits to 1e-5; in float64 the label-smoothed loss equal and
    gradients to 1e-6 relative (measured ~4e-7: fairseq's encoder attention takes its softmax in float32 even then;
    all in float32 the two attention codes round apart by ~2e-6 on this trained model).

    fairseq-fixed's label smoothing puts eps/(V-1) on the other symbols, (1 - eps - eps/(V-1)) on the target; ours
    (fairseq v0.8, the paper's) eps/V and (1 - eps): the same loss at fairseq's eps' = eps (V - 1) / V.
    """
    (theirs,), _ = fairseq_models([small["last"]], small["data"])
    ours = fairseq_checkpoint.load_model(small["last"])
    batch = parity_batch(small)
    theirs.train(), ours.train()
    src_lengths = batch["src_tokens"].ne(PAD).sum(1)
    real = batch["target"].ne(PAD)  # logits at padding positions are unused (and differ: fairseq masks no queries)
    their_logits = theirs(batch["src_tokens"], src_lengths, batch["prev_output_tokens"])[0]
    our_logits = ours(batch["src_tokens"], batch["prev_output_tokens"])
    assert (our_logits - their_logits)[real].abs().max() < 1e-5

    theirs.double(), ours.double()
    their_logits = theirs(batch["src_tokens"], src_lengths, batch["prev_output_tokens"])[0]
    our_logits = ours(batch["src_tokens"], batch["prev_output_tokens"])
    eps, vocab = 0.1, our_logits.size(-1)

    def fairseq_loss(logits):
        lprobs = torch.log_softmax(logits, dim=-1).view(-1, vocab)
        return fairseq_ls_loss(lprobs, batch["target"].view(-1), eps * (vocab - 1) / vocab, ignore_index=PAD)

    our_loss, our_nll = label_smoothed_nll_loss(our_logits, batch["target"], eps)  # computed in float32
    their_loss, their_nll = fairseq_loss(their_logits)
    assert our_loss.item() == pytest.approx(their_loss.item(), rel=1e-6)
    assert our_nll.item() == pytest.approx(their_nll.item(), rel=1e-6)
    # the models' backward passes, through one (float64) loss
    fairseq_loss(our_logits)[0].backward(), their_loss.backward()
    their_grads = fairseq_checkpoint.to_radam({n: p.grad for n, p in theirs.named_parameters() if p.grad is not None})
    our_grads = {n: p.grad for n, p in ours.named_parameters()}
    assert our_grads.keys() == their_grads.keys()
    for name, grad in our_grads.items():
        assert (grad - their_grads[name]).norm() <= 1e-6 * their_grads[name].norm(), name


@pytest.mark.slow  # uses the small model fairseq-train fits (~1.5 min once per module)
def test_averaged_checkpoints_import_as_the_mean_of_fairseqs_weights(small):
    """The last two epoch checkpoints averaged (eval.sh's average_checkpoints.py): our model's logits equal a fairseq
    model holding the element-wise mean of their parameters."""
    paths = sorted(small["checkpoints"].glob("checkpoint[0-9]*.pt"), key=lambda p: int(p.stem[len("checkpoint") :]))
    assert len(paths) == 2
    models, _ = fairseq_models(paths, small["data"])
    averaged = models[0]
    with torch.no_grad():
        for p, q in zip(averaged.parameters(), models[1].parameters()):
            p.copy_((p.double() + q.double()) / 2)
    ours = fairseq_checkpoint.load_model(paths)
    batch = parity_batch(small)
    averaged.eval()
    their_logits = averaged(batch["src_tokens"], batch["src_tokens"].ne(PAD).sum(1), batch["prev_output_tokens"])[0]
    difference = ours(batch["src_tokens"], batch["prev_output_tokens"]) - their_logits
    assert difference[batch["target"].ne(PAD)].abs().max() < 1e-5


def hypotheses(generate_output: str) -> dict[int, str]:
    return {int(m.group(1)): m.group(2) for m in re.finditer(r"^H-(\d+)\t\S+\t(.*)$", generate_output, re.M)}


def generate(data: Path, checkpoint: Path, cwd: Path, allow_namespace: bool = False) -> str:
    """fairseq-generate --beam 5 on the test split; fairseq-train's own checkpoints hold an argparse.Namespace that
    torch's weights-only load refuses, so for those it runs with that one class allow-listed."""
    args = [str(data), "--path", str(checkpoint), "--gen-subset", "test", "--beam", "5", "--batch-size", "50", "--cpu"]
    if not allow_namespace:
        return fairseq_cli("fairseq-generate", *args, cwd=cwd)
    code = (
        "import argparse, sys, torch; torch.serialization.add_safe_globals([argparse.Namespace]); "
        "from fairseq_cli.generate import cli_main; sys.argv[0] = 'fairseq-generate'; cli_main()"
    )
    return fairseq_cli(sys.executable, "-c", code, *args, cwd=cwd)


@pytest.fixture(scope="module")
def generated(small) -> str:
    return generate(small["data"], small["last"], small["root"], allow_namespace=True)


@pytest.mark.slow  # uses the small model fairseq-train fits (~1.5 min once per module)
def test_beam_5_equals_fairseq_generate_and_exported_checkpoint_decodes_in_fairseq(small, generated, tmp_path):
    """Our beam search on the imported model == fairseq-generate --beam 5 on the original checkpoint; our export of
    the imported model decodes in fairseq-generate (plain torch.load, no allow-list) to the same hypotheses."""
    model = fairseq_checkpoint.load_model(small["last"])
    fairseq_checkpoint.export(model, tmp_path / "exported.pt", source_lang="de", target_lang="en")
    theirs = hypotheses(generated)
    assert (
        len(theirs) == N_SENTENCES and hypotheses(generate(small["data"], tmp_path / "exported.pt", tmp_path)) == theirs
    )
    data = load_data_bin(small["data"], "de", "en", ["test"])
    test = data.splits["test"]
    ours = {}
    for start in range(0, len(test), 50):
        indices = np.arange(start, min(start + 50, len(test)))
        for i, (tokens, _) in zip(indices, beam_search(model, collate(test, indices)["src_tokens"], beam=5)):
            ours[int(i)] = data.tgt_dict.string(tokens)
    assert ours == theirs
    # a trained model: varied, often exact translations of the sentences it was fitted to
    references = data.lines("test", "en")
    assert len(set(ours.values())) > N_SENTENCES // 2
    assert sum(ours[i] == references[i] for i in ours) > N_SENTENCES // 10


@pytest.mark.slow  # uses the small model fairseq-train fits (~1.5 min once per module)
def test_cli_evaluates_a_fairseq_checkpoint_on_a_data_bin_folder(small, generated, tmp_path):
    """``task.data_dir=<data-bin> task.init_from=<checkpoint> task.max_update=0``: the fairseq model decoded by our
    beam search gives fairseq-generate's hypotheses and BLEU."""
    run_cli(
        "task=nmt",
        f"task.data_dir={small['data']}",
        f"task.init_from={small['last']}",
        "task.max_update=0",
        *OUR_ARCH,
        "task.model.share_all_embeddings=true",
        "task.model.dropout=0.0",
        runs=tmp_path / "runs",
    )
    (written,) = (tmp_path / "runs").rglob("test.hypotheses.txt")
    theirs = hypotheses(generated)
    assert read_lines(written) == [theirs[i] for i in range(N_SENTENCES)]
    final = json.loads((written.parent / "summary.json").read_text())["final"]
    assert final["test/bleu"] == pytest.approx(float(re.search(r"BLEU4 = ([\d.]+)", generated).group(1)), abs=0.01)


@pytest.mark.slow  # uses the small model fairseq-train fits (~1.5 min once per module)
def test_initialising_from_a_checkpoint_names_a_mismatched_architecture(small):
    from radam_repro.models.transformer import Transformer, TransformerConfig

    model = Transformer(TransformerConfig(src_vocab_size=16, tgt_vocab_size=16, d_model=64, ffn_dim=256, heads=4))
    with pytest.raises(ValueError, match=r"ffn_dim=128 in the checkpoint but 256 here.*task\.model"):
        fairseq_checkpoint.initialise(model, small["last"])


# --- learning-rate schedules ------------------------------------------------------------------------------


def fairseq_lrs(scheduler_cls, config_cls, updates: int, **cfg) -> list[float]:
    from fairseq.optim.sgd import SGD as FairseqSGD

    optimizer = FairseqSGD(
        argparse.Namespace(lr=[cfg["lr"][0]], momentum=0.0, weight_decay=0.0), [torch.nn.Parameter(torch.zeros(1))]
    )
    scheduler = scheduler_cls(config_cls(**cfg), optimizer)
    return [scheduler.step_update(k) for k in range(updates)]


@pytest.mark.parametrize("warmup, init_lr", [(4000, 1e-7), (100, 0.0)])
def test_inverse_sqrt_schedule_equals_fairseqs_step_by_step(warmup, init_lr):
    from fairseq.optim.lr_scheduler.inverse_square_root_schedule import (
        InverseSquareRootLRScheduleConfig,
        InverseSquareRootSchedule,
    )

    lr, updates = 5e-4, 3 * warmup
    theirs = fairseq_lrs(
        InverseSquareRootSchedule,
        InverseSquareRootLRScheduleConfig,
        updates,
        lr=[lr],
        warmup_updates=warmup,
        warmup_init_lr=init_lr,
    )
    schedule = Schedule(
        warmup="linear",
        warmup_steps=warmup,
        warmup_init_ratio=init_lr / lr,
        decay=Decay(kind="inverse_sqrt"),
        total_steps=updates,
    )
    assert [lr * schedule(k) for k in range(updates)] == pytest.approx(theirs, rel=1e-12, abs=1e-20)


@pytest.mark.parametrize("warmup", [0, 1000])
def test_linear_decay_with_warmup_equals_fairseqs_polynomial_decay(warmup):
    """fairseq ``polynomial_decay`` with power 1 (the paper's linear decay to 1e-9 at 70k updates), step by step."""
    from fairseq.optim.lr_scheduler.polynomial_decay_schedule import (
        PolynomialDecayLRSchedule,
        PolynomialDecayLRScheduleConfig,
    )

    lr, end, total = 3e-4, 1e-9, 70_000
    theirs = fairseq_lrs(
        PolynomialDecayLRSchedule,
        PolynomialDecayLRScheduleConfig,
        total + 10,
        lr=[lr],
        warmup_updates=warmup,
        end_learning_rate=end,
        total_num_update=total,
        power=1.0,
    )
    schedule = Schedule(
        warmup="linear" if warmup else "none",
        warmup_steps=warmup,
        decay=Decay(kind="linear", min_lr_ratio=end / lr),
        total_steps=total,
    )
    assert [lr * schedule(k) for k in range(total + 10)] == pytest.approx(theirs, rel=1e-9, abs=1e-20)


# --- our optimizers inside fairseq-train ------------------------------------------------------------------


def train_few(small, save_dir: Path, *optimizer: str, updates: int = 6) -> Path:
    """``updates`` updates of fairseq-train (seed 7, dropout 0.1, inverse_sqrt from 5e-4 to 1e-3 in 3), a checkpoint
    after each: ``save_dir/checkpoint_1_<update>.pt``."""
    recipe = shlex.split(
        f"--cpu --seed 7 --lr 1e-3 --lr-scheduler inverse_sqrt --warmup-updates 3 --warmup-init-lr 5e-4 "
        f"--weight-decay 1e-4 --criterion label_smoothed_cross_entropy --label-smoothing 0.1 --max-tokens 500 "
        f"--max-update {updates} --save-interval-updates 1 --no-epoch-checkpoints --disable-validation"
    )
    args = [str(small["data"]), "--user-dir", str(PLUGIN), *ARCH, *optimizer, *recipe, "--save-dir", str(save_dir)]
    fairseq_cli("fairseq-train", *args, cwd=save_dir.parent)
    return save_dir


def flat_weights(checkpoint: dict) -> torch.Tensor:
    return torch.cat([v.flatten() for k, v in sorted(checkpoint["model"].items()) if not k.endswith("._float_tensor")])


BETAS = shlex.split("--adam-betas '(0.9, 0.98)' --adam-eps 1e-8")


@pytest.fixture(scope="module")
def fairseq_adam(small) -> Path:
    """fairseq's own adam for 6 updates."""
    return train_few(small, small["root"] / "adam", "--optimizer", "adam", *BETAS)


@pytest.mark.slow  # uses the small model fairseq-train fits (~1.5 min once per module)
def test_plugin_adam_matches_fairseqs_adam_in_fairseq_train(small, fairseq_adam, tmp_path):
    """fairseq-train with --optimizer radam_repro_adam == with fairseq's own adam (same seed, data, dropout masks).

    After one update the weights agree to float32 rounding; the two codes round differently (lerp vs mul+add for
    m_t), and 5 more updates of training amplify that to ~1e-4 of the distance the weights travel, bounded here
    by 1e-3 of it. The moments and step counts are compared too.
    """
    theirs = fairseq_adam
    ours = train_few(small, tmp_path / "ours", "--optimizer", "radam_repro_adam", *BETAS)
    load = fairseq_checkpoint.load
    first_theirs, first_ours = load(theirs / "checkpoint_1_1.pt"), load(ours / "checkpoint_1_1.pt")
    assert (flat_weights(first_ours) - flat_weights(first_theirs)).abs().max() < 1e-7
    last_theirs, last_ours = load(theirs / "checkpoint_1_6.pt"), load(ours / "checkpoint_1_6.pt")
    assert last_ours["optimizer_history"][-1]["optimizer_name"] == "RadamReproAdam"
    assert last_ours["optimizer_history"][-1]["num_updates"] == last_theirs["optimizer_history"][-1]["num_updates"] == 6
    travelled = (flat_weights(last_theirs) - flat_weights(first_theirs)).norm()
    assert (flat_weights(last_ours) - flat_weights(last_theirs)).norm() < 1e-3 * travelled
    their_state, our_state = last_theirs["last_optimizer_state"]["state"], last_ours["last_optimizer_state"]["state"]
    assert their_state.keys() == our_state.keys() and len(their_state) > 0
    assert all(int(our_state[i]["step"]) == state["step"] == 6 for i, state in their_state.items())
    for key in ("exp_avg", "exp_avg_sq"):
        mine, reference = (torch.cat([s[i][key].flatten() for i in sorted(s)]) for s in (our_state, their_state))
        assert (mine - reference).norm() < 1e-3 * reference.norm(), key


@pytest.mark.slow  # uses the small model fairseq-train fits (~1.5 min once per module)
def test_plugin_flags_reach_radam_and_adam_2k(small, fairseq_adam, tmp_path):
    """--radam-no-sgd with threshold 5: the first 5 updates skip (rho_t <= 5), so the weights equal Adam-2k's with
    5 frozen steps (both untouched, weight decay included) and differ from fairseq's adam; the optimizer state
    records the flags."""
    load = fairseq_checkpoint.load
    radam = shlex.split("--optimizer radam_repro_radam --radam-threshold 5 --radam-no-sgd --eps-placement sqrt_vhat")
    skip = load(train_few(small, tmp_path / "skip", *radam, updates=5) / "checkpoint_1_5.pt")
    adam_2k = shlex.split("--optimizer radam_repro_adam_2k --freeze-steps 5")
    frozen = load(train_few(small, tmp_path / "frozen", *adam_2k, updates=5) / "checkpoint_1_5.pt")
    adam = load(fairseq_adam / "checkpoint_1_1.pt")
    group = skip["last_optimizer_state"]["param_groups"][0]
    assert (group["threshold"], group["degenerated_to_sgd"], group["eps_placement"]) == (5.0, False, "sqrt_vhat")
    assert frozen["last_optimizer_state"]["param_groups"][0]["freeze_steps"] == 5
    assert torch.equal(flat_weights(skip), flat_weights(frozen))
    assert not torch.equal(flat_weights(skip), flat_weights(adam))
