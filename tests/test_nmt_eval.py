"""Evaluation: beam search vs greedy and brute force, BLEU, checkpoint averaging, final evaluation."""

from __future__ import annotations

import itertools
import math
from collections import Counter
from pathlib import Path

import pytest
import sacrebleu
import torch
from conftest import tiny_transformer
from omegaconf import OmegaConf

from radam_repro.models.sequence_generator import beam_search, greedy_search
from radam_repro.models.transformer import Transformer
from radam_repro.tasks.translation import average_checkpoints, build, tokenized_bleu

torch.set_num_threads(1)
PAD, EOS = 1, 2


def toy_model(tgt_vocab: int, sharpness: float = 8.0) -> Transformer:
    """A random tiny Transformer whose output distributions are peaked enough to differ between sentences."""
    model = tiny_transformer(tgt_vocab_size=tgt_vocab, dropout=0.0)
    with torch.no_grad():
        model.output_projection.mul_(sharpness)
    return model


def sources(n: int) -> torch.Tensor:
    src = torch.randint(4, 40, (n, 7), generator=torch.Generator().manual_seed(3))
    src[:, -1] = EOS
    src[0, 4:] = PAD  # one shorter sentence
    src[0, 3] = EOS
    return src


def test_beam_1_equals_greedy():
    model, src = toy_model(12), sources(8)
    greedy = greedy_search(model, src, max_len_b=12)
    beam = beam_search(model, src, beam=1, max_len_b=12)
    assert [g.tolist() for g in greedy] == [b.tolist() for b, _ in beam]


def sequence_score(model: Transformer, src: torch.Tensor, tokens: tuple[int, ...]) -> float:
    """sum log p(y_t) / len, ``</s>`` included, by teacher forcing (fairseq's lenpen 1.0 score)."""
    target = list(tokens) + [EOS]
    prev = torch.tensor([[EOS] + list(tokens)])
    lprobs = torch.log_softmax(model(src[None], prev)[0].double(), dim=-1)
    return sum(lprobs[t, token].item() for t, token in enumerate(target)) / len(target)


def test_beam_search_finds_the_best_sequence_of_an_enumerable_case():
    """Vocabulary {<s>, <pad>, </s>, <unk>, 4}, outputs of 1-3 tokens (then </s>): 39 candidates, all scored."""
    model, src = toy_model(5), sources(4)
    allowed = (0, 3, 4)  # <pad> is never generated and </s> ends a sentence
    for i in range(len(src)):
        candidates = [c for n in (1, 2, 3) for c in itertools.product(allowed, repeat=n)]
        scores = {c: sequence_score(model, src[i], c) for c in candidates}
        best = max(scores, key=scores.get)
        tokens, score = beam_search(model, src[i : i + 1], beam=40, max_len_b=3)[0]  # wide enough to be exact
        assert tuple(tokens.tolist()) == best
        assert score == pytest.approx(scores[best], abs=1e-5)
    batched = beam_search(model, src, beam=40, max_len_b=3)
    for i, (tokens, _) in enumerate(batched):
        assert tokens.tolist() == beam_search(model, src[i : i + 1], beam=40, max_len_b=3)[0][0].tolist()


def test_beam_5_respects_max_len_and_scores_at_least_as_well_as_greedy():
    model, src = toy_model(12), sources(6)
    for i, (tokens, score) in enumerate(beam_search(model, src, beam=5, max_len_b=6)):
        assert len(tokens) <= 6
        assert score == pytest.approx(sequence_score(model, src[i], tuple(tokens.tolist())), abs=1e-5)
        greedy = tuple(greedy_search(model, src[i : i + 1], max_len_b=6)[0].tolist())
        assert score >= sequence_score(model, src[i], greedy) - 1e-6


def papineni_bleu(hypotheses: list[str], references: list[str]) -> float:
    """Corpus BLEU-4 from its definition: BP · exp(mean log p_n), clipped n-gram precisions."""
    matches, totals, hyp_len, ref_len = [0] * 4, [0] * 4, 0, 0
    for hyp, ref in zip(hypotheses, references):
        h, r = hyp.split(), ref.split()
        hyp_len, ref_len = hyp_len + len(h), ref_len + len(r)
        for n in range(1, 5):
            h_ngrams = Counter(tuple(h[i : i + n]) for i in range(len(h) - n + 1))
            r_ngrams = Counter(tuple(r[i : i + n]) for i in range(len(r) - n + 1))
            matches[n - 1] += sum(min(c, r_ngrams[g]) for g, c in h_ngrams.items())
            totals[n - 1] += max(len(h) - n + 1, 0)
    brevity = 1.0 if hyp_len > ref_len else math.exp(1 - ref_len / hyp_len)
    return 100 * brevity * math.exp(sum(math.log(m / t) for m, t in zip(matches, totals)) / 4)


def test_bleu_of_references_is_100_and_matches_the_definition():
    references = ["the cat sat on the mat .", "there is a dog in the garden , and it is barking loudly ."]
    assert tokenized_bleu(references, references) == pytest.approx(100.0)
    hypotheses = ["the cat sat on a mat .", "there is a dog in the garden , it barks loudly ."]
    assert tokenized_bleu(hypotheses, references) == pytest.approx(papineni_bleu(hypotheses, references), abs=1e-9)
    # tokenize="none": "mat." is one token, unlike sacreBLEU's default 13a tokenisation
    glued = ["the cat sat on the mat.", references[1]]
    assert tokenized_bleu(glued, references) < sacrebleu.corpus_bleu(glued, [references]).score


def test_checkpoint_averaging_is_the_mean_of_the_weights(tmp_path):
    states = []
    for seed in range(3):
        torch.manual_seed(seed)
        state = torch.nn.Linear(5, 4).state_dict()
        states.append(state)
        torch.save({"model": state, "step": seed}, tmp_path / f"step_{seed:07d}.pt")
    averaged = average_checkpoints(sorted(tmp_path.glob("step_*.pt")))
    for key in states[0]:
        torch.testing.assert_close(averaged[key], torch.stack([s[key] for s in states]).mean(0))


def write_corpus(folder: Path, iwslt: Path, n: int) -> None:
    """The first n lines of the staged valid split as train/valid/test of a tiny folder."""
    for split in ("train", "valid", "test"):
        for lang in ("de", "en"):
            lines = (iwslt / f"valid.{lang}").read_text(encoding="utf-8").splitlines()[:n]
            (folder / f"{split}.{lang}").write_text("".join(line + "\n" for line in lines), encoding="utf-8")


def test_final_evaluation_averages_the_last_checkpoints_and_scores_bleu(iwslt, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    write_corpus(data, iwslt, 24)
    model_cfg = {"layers": 1, "d_model": 16, "ffn_dim": 32, "heads": 2, "dropout": 0.0}
    cfg = OmegaConf.create(
        {
            "name": "nmt",
            "data_dir": str(data),
            "cache_dir": str(tmp_path / "cache"),
            "average_last": 2,
            "max_len_b": 5,
            "model": model_cfg,
        }
    )
    task = build(cfg, seed=1, device=torch.device("cpu"))
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    states = []
    for step in (10, 20, 30):  # only the last two are averaged
        torch.manual_seed(step)
        state = type(task.model)(task.model.cfg).state_dict()
        states.append(state)
        torch.save({"model": state, "task": task.state_dict()}, run / "checkpoints" / f"step_{step:07d}.pt")
    result = task.final_evaluation(task.model, run, sorted((run / "checkpoints").glob("step_*.pt")))
    assert result["test/checkpoints_averaged"] == 2

    expected = type(task.model)(task.model.cfg)
    expected.load_state_dict({k: (states[1][k] + states[2][k]) / 2 for k in states[0]})
    hypotheses = task.translate(expected, "test")
    assert (run / "test.hypotheses.txt").read_text(encoding="utf-8").splitlines() == hypotheses
    last = type(task.model)(task.model.cfg)
    last.load_state_dict(states[2])
    assert task.translate(last, "test") != hypotheses  # the average, not the last checkpoint, was decoded
    references = [
        (line + " ").replace("@@ ", "").rstrip() for line in (data / "test.en").read_text(encoding="utf-8").splitlines()
    ]
    assert result["test/bleu"] == pytest.approx(tokenized_bleu(hypotheses, references))
