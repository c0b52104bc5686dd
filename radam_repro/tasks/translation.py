"""Neural machine translation tasks: IWSLT'14 De-En (``nmt``), Multi30k (``nmt_multi30k``), synthetic (``nmt_synthetic``).

Model: fairseq's ``transformer_iwslt_de_en`` (:mod:`radam_repro.models.transformer`). Loss:
fairseq's (v0.8, the paper's era) label-smoothed cross-entropy summed over non-padding target
tokens ``y_t`` with ``V`` output symbols,

    L = sum_t [ (1 - eps) * (-log p(y_t)) + eps / V * sum_v (-log p(v)) ],

and the loss returned for back-propagation is ``L / ntokens``, the mean per target token (fairseq
divides the summed gradient by ``ntokens``). Logged values are in nats (fairseq logs base 2);
``ppl = exp(nll_loss)`` equals fairseq's ``2 ** nll_loss_base2``.

Final evaluation (``eval.sh``): average the last ``average_last`` checkpoints, beam search
(beam 5, length penalty 1) on the test split, BLEU on the BPE-removed tokenised lowercased text as
fairseq's scorer (sacreBLEU with ``tokenize="none"``), detokenised sacreBLEU as an option.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np
import sacrebleu
import torch
from omegaconf import MISSING, DictConfig, OmegaConf
from torch import nn

from radam_repro import tasks
from radam_repro.data.bilingual import (
    PAD,
    BilingualData,
    batch_by_size,
    collate,
    length_sorted_indices,
    load_bilingual,
    prepare_multi30k,
    remove_bpe,
)
from radam_repro.data.fairseq_binarized import is_data_bin, load_data_bin
from radam_repro.data.synthetic_translation import VALID_STREAM, SyntheticTranslation
from radam_repro.models import fairseq_checkpoint
from radam_repro.models.sequence_generator import beam_search
from radam_repro.models.transformer import Architecture, Transformer, TransformerConfig
from radam_repro.tasks.base import Decay, Task, bounded, perplexity


@dataclass
class ModelConfig(Architecture):
    """Architecture keys (``task.model.*``); ``layers`` is a shorthand that sets encoder and decoder layers."""

    layers: Optional[int] = None


@dataclass
class NMTConfig:
    name: str = "nmt"
    data_dir: str = MISSING  # a prepare-iwslt14.sh folder or a fairseq data-bin folder (dict.*.txt, *.bin/.idx)
    source_lang: str = "de"
    target_lang: str = "en"
    train_split: str = "train"  # "valid" trains on the staged IWSLT sample (every 23rd training line)
    test_split: str = "test"
    cache_dir: Optional[str] = None  # dictionaries and learned BPE; default $RADAM_REPRO_CACHE or ~/.cache/radam_repro
    bpe_merges: int = bounded(10000, 1)  # nmt_multi30k: joint BPE merges learned by subword-nmt
    max_tokens: int = bounded(4000, 1)
    max_update: int = bounded(70000, 0)
    label_smoothing: float = bounded(0.1, 0.0, 1.0)
    clip_norm: float = bounded(25.0, 0.0)
    min_lr: float = bounded(1e-9, 0.0)  # the linear decay's end (fairseq --min-lr)
    average_last: int = bounded(10, 1)  # eval.sh averages 10 checkpoints, the paper says 20
    beam: int = bounded(5, 1)
    lenpen: float = 1.0
    max_len_a: float = 0.0
    max_len_b: int = 200
    eval_batch_size: int = bounded(128, 1)  # sentences per beam-search batch
    detok_bleu: bool = False  # also sacreBLEU (13a) on Moses-detokenised text
    init_from: Optional[str] = None  # a fairseq checkpoint_*.pt: initial weights (with max_update=0: evaluate it)
    model: ModelConfig = field(default_factory=ModelConfig)


@dataclass
class SyntheticConfig:
    name: str = "nmt_synthetic"
    vocab: int = bounded(32, 2)
    length: int = bounded(12, 1)
    task_seed: int = 0
    batch_size: int = bounded(64, 1)
    max_update: int = bounded(500, 1)
    steps_per_epoch: int = bounded(100, 1)
    # linear decay to 0 from this fraction of T (None: fairseq's, after a warmup)
    decay_start: Optional[float] = bounded(None, 0.0, 1.0)
    label_smoothing: float = bounded(0.0, 0.0, 1.0)
    clip_norm: float = bounded(0.0, 0.0)
    valid_batches: int = bounded(4, 1)
    model: ModelConfig = field(
        default_factory=lambda: ModelConfig(
            encoder_layers=4, decoder_layers=4, d_model=64, ffn_dim=256, heads=4, dropout=0.0, share_all_embeddings=True
        )
    )


def build_transformer(model_cfg: DictConfig, src_vocab: int, tgt_vocab: int) -> Transformer:
    arch = OmegaConf.to_container(model_cfg)
    layers = arch.pop("layers")
    if layers is not None:
        arch["encoder_layers"] = arch["decoder_layers"] = layers
    return Transformer(TransformerConfig(src_vocab_size=src_vocab, tgt_vocab_size=tgt_vocab, padding_idx=PAD, **arch))


def label_smoothed_nll_loss(
    logits: torch.Tensor, target: torch.Tensor, epsilon: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """(loss, nll) summed over non-padding tokens: loss = (1-eps)·nll + eps/V·sum_v(-log p_v) (fairseq v0.8)."""
    lprobs = torch.log_softmax(logits.float(), dim=-1)
    keep = target.ne(PAD)
    nll = -lprobs.gather(-1, target.unsqueeze(-1)).squeeze(-1)[keep].sum()
    smooth = -lprobs.sum(-1)[keep].sum()
    return (1.0 - epsilon) * nll + epsilon / lprobs.size(-1) * smooth, nll


def shard_sentences(batch: dict, rank: int, world: int) -> dict:
    """Rank ``rank``'s sentences of a global batch (``world`` near-equal parts) for DDP.

    Each shard keeps ``ntokens`` = N/W, N the global batch's target tokens, so rank r's loss is
    L_r = W·S_r/N with S_r its summed token loss, and DDP's mean (1/W)·Σ_r L_r = Σ_r S_r/N is the
    single-process loss exactly, however the tokens fall (token-based batches, uneven splits).
    Shards keep the global padding width. Summed over ranks, the logged ``ntokens`` is N.
    """
    sentences = len(batch["target"])
    if sentences < world:
        raise ValueError(
            f"a batch of {sentences} sentences cannot feed {world} processes; "
            "raise task.max_tokens (or task.batch_size), or lower trainer.devices"
        )
    lo, hi = rank * sentences // world, (rank + 1) * sentences // world
    shard = {key: value[lo:hi] for key, value in batch.items() if key != "ntokens"}
    shard["ntokens"] = batch["ntokens"] / world
    return shard


def average_checkpoints(paths: list[Path]) -> dict[str, torch.Tensor]:
    """fairseq ``average_checkpoints.py``: the element-wise mean of the ``"model"`` state dicts (float64 sums)."""
    return fairseq_checkpoint.average((path, fairseq_checkpoint.load(path)["model"]) for path in paths)


def tokenized_bleu(hypotheses: list[str], references: list[str]) -> float:
    """BLEU-4 on already tokenised text, as fairseq-generate's scorer: sacreBLEU with ``tokenize="none"``."""
    return sacrebleu.corpus_bleu(hypotheses, [references], tokenize="none", force=True).score


def detokenized_bleu(hypotheses: list[str], references: list[str], lang: str) -> float:
    """sacreBLEU (13a) on Moses-detokenised hypotheses and references."""
    from sacremoses import MosesDetokenizer

    detok = MosesDetokenizer(lang=lang)
    return sacrebleu.corpus_bleu(
        [detok.detokenize(h.split()) for h in hypotheses], [[detok.detokenize(r.split()) for r in references]]
    ).score


class Seq2SeqTask(Task):
    """What the translation tasks share: sentence-wise DDP shards and the label-smoothed loss per target token."""

    token_accuracy = False  # also report the token accuracy of each batch (synthetic task)

    def shard(self, batch: dict, rank: int, world: int) -> dict:
        return shard_sentences(batch, rank, world)

    def loss(self, model: nn.Module, batch: dict) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        logits = model(batch["src_tokens"], batch["prev_output_tokens"])
        loss, nll = label_smoothed_nll_loss(logits, batch["target"], self.cfg.label_smoothing)
        ntokens = batch["ntokens"]
        metrics = {"nll_loss": nll.detach() / ntokens, "ntokens": ntokens.float()}
        if self.token_accuracy:
            metrics["acc"] = logits.argmax(-1).eq(batch["target"]).float().mean() * 100  # percent, as every task
        return loss / ntokens, metrics


class TranslationTask(Seq2SeqTask):
    """A Transformer on a parallel corpus in the prepare-iwslt14.sh layout."""

    def __init__(self, cfg: DictConfig, data: BilingualData, *, seed: int, device: torch.device):
        self.cfg, self.data, self.seed, self.device = cfg, data, seed, device
        self.model = build_transformer(cfg.model, len(data.src_dict), len(data.tgt_dict))
        if cfg.init_from:
            fairseq_checkpoint.initialise(self.model, cfg.init_from)
        self.model.to(device)
        train = data.splits[cfg.train_split]
        too_long = int((np.maximum(train.src.lengths, train.tgt.lengths) > cfg.model.max_positions).sum())
        if too_long:
            raise ValueError(f"{too_long} training sentences exceed model.max_positions={cfg.model.max_positions}")
        self.batches = batch_by_size(length_sorted_indices(train, seed), train.num_tokens, cfg.max_tokens)
        self.steps_per_epoch = len(self.batches)
        self.total_steps = cfg.max_update
        self.clip_norm = cfg.clip_norm
        self.decay = Decay(kind="linear", min_lr=cfg.min_lr)
        self.checkpoints_needed = cfg.average_last

    def train_batches(self, epoch: int, start: int = 0) -> Iterator[dict]:
        """Batches fixed once per run (seeded tie-breaking), visited in an order shuffled by (seed, epoch)."""
        order = np.random.RandomState(self.seed + epoch + 1).permutation(
            len(self.batches)
        )  # fairseq epochs count from 1
        train = self.data.splits[self.cfg.train_split]
        for index in order[start:]:
            yield collate(train, self.batches[index], self.device)

    @torch.no_grad()
    def evaluate(self, model: nn.Module, split: str = "valid") -> dict[str, float]:
        data = self.data.splits[split]
        was_training = model.training
        model.eval()
        loss_sum = nll_sum = ntokens = 0.0
        for indices in batch_by_size(length_sorted_indices(data, None), data.num_tokens, self.cfg.max_tokens):
            batch = collate(data, indices, self.device)
            logits = model(batch["src_tokens"], batch["prev_output_tokens"])
            loss, nll = label_smoothed_nll_loss(logits, batch["target"], self.cfg.label_smoothing)
            loss_sum, nll_sum, ntokens = loss_sum + float(loss), nll_sum + float(nll), ntokens + int(batch["ntokens"])
        model.train(was_training)
        nll = nll_sum / ntokens
        return {f"{split}/loss": loss_sum / ntokens, f"{split}/nll_loss": nll, f"{split}/ppl": perplexity(nll)}

    @torch.no_grad()
    def translate(self, model: Transformer, split: str) -> list[str]:
        """Beam-search hypotheses of every sentence of ``split``, BPE removed, in corpus order."""
        data = self.data.splits[split]
        hypotheses = [""] * len(data)
        for indices in batch_by_size(
            length_sorted_indices(data, None), data.num_tokens, None, self.cfg.eval_batch_size, 1
        ):
            src = collate(data, indices, self.device)["src_tokens"]
            results = beam_search(
                model,
                src,
                beam=self.cfg.beam,
                lenpen=self.cfg.lenpen,
                max_len_a=self.cfg.max_len_a,
                max_len_b=self.cfg.max_len_b,
            )
            for index, (tokens, _) in zip(indices, results):
                hypotheses[index] = remove_bpe(self.data.tgt_dict.string(tokens))
        return hypotheses

    def final_evaluation(self, model: nn.Module, run_dir: Path, checkpoints: list[Path]) -> dict[str, float]:
        """eval.sh: average the last ``average_last`` of the kept step ``checkpoints`` (if any), then test BLEU.

        The BPE-removed hypotheses are written to ``run_dir/<test_split>.hypotheses.txt``.
        """
        paths = checkpoints[-self.cfg.average_last :]
        averaged = self.model  # shares its parameters with `model`, which may be wrapped
        if paths:
            averaged = copy.deepcopy(self.model)
            averaged.load_state_dict(average_checkpoints(paths))
        split = self.cfg.test_split
        hypotheses = self.translate(averaged, split)
        Path(run_dir, f"{split}.hypotheses.txt").write_text("".join(h + "\n" for h in hypotheses), encoding="utf-8")
        references = [remove_bpe(line) for line in self.data.lines(split, self.data.tgt_lang)]
        results = {
            f"{split}/bleu": tokenized_bleu(hypotheses, references),
            f"{split}/checkpoints_averaged": float(len(paths)),
        }
        if self.cfg.detok_bleu:
            results[f"{split}/sacrebleu_detok"] = detokenized_bleu(hypotheses, references, self.data.tgt_lang)
        return results

    def state_dict(self) -> dict:
        return {"src_dict_sha256": self.data.src_dict.sha256, "tgt_dict_sha256": self.data.tgt_dict.sha256}

    def load_state_dict(self, state: dict) -> None:
        """Refuse a checkpoint trained with other dictionaries (its embedding rows would mean other words)."""
        if state and state != self.state_dict():
            raise ValueError(
                f"checkpoint was trained with other dictionaries ({state}) than the data in {self.data.data_dir} "
                f"({self.state_dict()}); train on the same prepared data or start a new run"
            )


def build(cfg: DictConfig, *, seed: int, device: torch.device) -> TranslationTask:
    """``task=nmt`` (prepare-iwslt14.sh or fairseq data-bin folder) or ``task=nmt_multi30k`` (Multi30k ``tok/``);
    the config goes through :func:`radam_repro.tasks.config` (resolved, defaulted, checked)."""
    cfg = tasks.config(cfg)
    data_dir = Path(cfg.data_dir)
    splits = dict.fromkeys([cfg.train_split, "valid", cfg.test_split])
    if cfg.name == "nmt_multi30k":
        data_dir = prepare_multi30k(data_dir, cfg.source_lang, cfg.target_lang, cfg.bpe_merges, cfg.cache_dir)
    if is_data_bin(data_dir, cfg.source_lang, cfg.target_lang):
        data = load_data_bin(data_dir, cfg.source_lang, cfg.target_lang, splits)
    else:
        data = load_bilingual(
            data_dir,
            cfg.source_lang,
            cfg.target_lang,
            splits=splits,
            dict_split=cfg.train_split,
            cache_dir=cfg.cache_dir,
        )
    return TranslationTask(cfg, data, seed=seed, device=device)


class SyntheticTranslationTask(Seq2SeqTask):
    """Reverse-and-substitute translation (:mod:`radam_repro.data.synthetic_translation`), fresh batch each step."""

    token_accuracy = True

    def __init__(self, cfg: DictConfig, *, seed: int, device: torch.device):
        self.cfg, self.seed, self.device = cfg, seed, device
        self.data = SyntheticTranslation(cfg.vocab, cfg.length, cfg.task_seed)
        self.model = build_transformer(cfg.model, self.data.num_tokens, self.data.num_tokens).to(device)
        self.steps_per_epoch = cfg.steps_per_epoch
        self.total_steps = cfg.max_update
        self.clip_norm = cfg.clip_norm
        start = None if cfg.decay_start is None else int(round(cfg.decay_start * cfg.max_update))
        self.decay = Decay(kind="linear", min_lr_ratio=0.0, start=start)

    def train_batches(self, epoch: int, start: int = 0) -> Iterator[dict]:
        for index in range(start, self.steps_per_epoch):
            yield self.data.batch(self.seed, epoch * self.steps_per_epoch + index, self.cfg.batch_size, self.device)

    def valid_batches(self) -> Iterator[dict]:
        """A fixed validation set shared by every run: drawn from ``task_seed`` on a stream training never uses."""
        for index in range(self.cfg.valid_batches):
            yield self.data.batch(self.cfg.task_seed, index, self.cfg.batch_size, self.device, stream=VALID_STREAM)

    @torch.no_grad()
    def evaluate(self, model: nn.Module) -> dict[str, float]:
        was_training = model.training
        model.eval()
        totals = np.zeros(4)  # loss, nll, correct, tokens
        for batch in self.valid_batches():
            logits = model(batch["src_tokens"], batch["prev_output_tokens"])
            loss, nll = label_smoothed_nll_loss(logits, batch["target"], self.cfg.label_smoothing)
            correct = logits.argmax(-1).eq(batch["target"]).sum()
            totals += [float(loss), float(nll), float(correct), float(batch["ntokens"])]
        model.train(was_training)
        loss, nll, correct, ntokens = totals.tolist()
        return {
            "valid/loss": loss / ntokens,
            "valid/nll_loss": nll / ntokens,
            "valid/ppl": perplexity(nll / ntokens),
            "valid/acc": 100 * correct / ntokens,
        }

    def state_dict(self) -> dict:
        return {"vocab": self.cfg.vocab, "length": self.cfg.length, "task_seed": self.cfg.task_seed}

    def load_state_dict(self, state: dict) -> None:
        if state and state != self.state_dict():
            raise ValueError(f"checkpoint is from another synthetic task ({state}, this run: {self.state_dict()})")


def build_synthetic(cfg: DictConfig, *, seed: int, device: torch.device) -> SyntheticTranslationTask:
    """``task=nmt_synthetic``: no data needed; the config goes through :func:`radam_repro.tasks.config`."""
    return SyntheticTranslationTask(tasks.config(cfg), seed=seed, device=device)
