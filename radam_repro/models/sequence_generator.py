"""Batched beam search and greedy decoding for :class:`~radam_repro.models.transformer.Transformer`.

Beam search follows fairseq's ``SequenceGenerator`` (as used by ``fairseq-generate --beam 5``):

* decoding starts from ``</s>``; ``</s>`` is forbidden at the first step (``min_len`` 1) and
  ``<pad>`` always; at step ``max_len = max_len_a * src_len + max_len_b`` (``src_len`` the padded
  source length, ``</s>`` included) every hypothesis is forced to end;
* each step takes the top ``2 * beam`` continuations of the ``beam`` live hypotheses (all
  copies of one start at step 0); those ending in ``</s>`` among the first ``beam`` candidates are
  finished with score ``sum(log p) / len ** lenpen`` (``len`` counts ``</s>``); the best ``beam``
  others stay live;
* a sentence is done once it has ``beam`` finished hypotheses (fairseq: no early stop on score),
  and leaves the batch; the answer is its best finished hypothesis.

Candidates with ``-inf`` score (fewer valid continuations than ``2 * beam``) are never finished.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


def _step_log_probs(model, tokens: Tensor, encoder, cache, step: int, max_len: int, pad: int, eos: int) -> Tensor:
    """Log-probabilities of the next token with fairseq's constraints (no pad, no eos at step 0, eos at max_len)."""
    lprobs = torch.log_softmax(model.decode(tokens, encoder, cache)[:, -1].float(), dim=-1)
    lprobs[:, pad] = -math.inf
    if step == 0:
        lprobs[:, eos] = -math.inf
    if step >= max_len:
        eos_column = lprobs[:, eos].clone()
        lprobs.fill_(-math.inf)
        lprobs[:, eos] = eos_column
    return lprobs


def _max_len(src_tokens: Tensor, max_len_a: float, max_len_b: int, max_positions: int) -> int:
    return min(int(max_len_a * src_tokens.size(1) + max_len_b), max_positions - 1)


@torch.no_grad()
def greedy_search(
    model, src_tokens: Tensor, *, pad: int = 1, eos: int = 2, max_len_a: float = 0.0, max_len_b: int = 200
) -> list[Tensor]:
    """Argmax decoding; returns one 1-d tensor of output tokens per sentence, ``</s>`` excluded."""
    model.eval()
    batch = src_tokens.size(0)
    max_len = _max_len(src_tokens, max_len_a, max_len_b, model.cfg.max_positions)
    encoder, cache = model.encode(src_tokens), model.new_cache()
    tokens = torch.full((batch, 1), eos, dtype=torch.long, device=src_tokens.device)
    done = torch.zeros(batch, dtype=torch.bool, device=src_tokens.device)
    for step in range(max_len + 1):
        next_token = _step_log_probs(model, tokens, encoder, cache, step, max_len, pad, eos).argmax(-1)
        next_token = next_token.masked_fill(done, pad)
        tokens = torch.cat([tokens, next_token[:, None]], dim=1)
        done |= next_token.eq(eos)
        if bool(done.all()):
            break
    return [row[1:][(row[1:] != eos) & (row[1:] != pad)] for row in tokens.cpu()]


@torch.no_grad()
def beam_search(
    model,
    src_tokens: Tensor,
    *,
    beam: int = 5,
    lenpen: float = 1.0,
    pad: int = 1,
    eos: int = 2,
    max_len_a: float = 0.0,
    max_len_b: int = 200,
) -> list[tuple[Tensor, float]]:
    """Best finished hypothesis per sentence as ``(tokens without </s>, normalised score)``."""
    model.eval()
    batch, device = src_tokens.size(0), src_tokens.device
    max_len = _max_len(src_tokens, max_len_a, max_len_b, model.cfg.max_positions)
    rows = torch.arange(batch, device=device).repeat_interleave(beam)
    encoder, cache = model.reorder_encoder_out(model.encode(src_tokens), rows), model.new_cache()
    live_ids = list(range(batch))  # original index of each sentence still being decoded
    tokens = torch.full((batch * beam, 1), eos, dtype=torch.long, device=device)
    # all beams start identical: only the first may extend at step 0
    scores = torch.zeros(batch, beam, device=device)
    scores[:, 1:] = -math.inf
    scores = scores.view(-1)
    finished: list[list[tuple[float, Tensor]]] = [[] for _ in range(batch)]

    for step in range(max_len + 1):
        live = len(live_ids)
        lprobs = _step_log_probs(model, tokens, encoder, cache, step, max_len, pad, eos)
        vocab = lprobs.size(1)
        top_scores, top_index = (scores[:, None] + lprobs).view(live, beam * vocab).topk(2 * beam, dim=1)
        top_beam, top_token = top_index // vocab, top_index % vocab
        ends = top_token.eq(eos) & torch.isfinite(top_scores)
        ends[:, beam:] = False

        ended = ends.nonzero()
        if ended.numel():
            row, column = ended[:, 0], ended[:, 1]
            hypotheses = tokens.index_select(0, row * beam + top_beam[row, column])[:, 1:].cpu()
            normalised = (top_scores[row, column] / (step + 1) ** lenpen).tolist()
            for i, hypothesis, score in zip(row.tolist(), hypotheses, normalised):
                if len(finished[live_ids[i]]) < beam:
                    finished[live_ids[i]].append((score, hypothesis))

        still_live_list = [len(finished[sentence]) < beam for sentence in live_ids]
        if step == max_len or not any(still_live_list):
            break
        still_live = torch.tensor(still_live_list, device=device)
        # the best `beam` candidates that do not end the sentence stay live (fairseq's active_mask)
        rank = torch.arange(top_scores.size(1), device=device).expand_as(top_scores) + top_token.eq(
            eos
        ) * top_scores.size(1)
        keep = rank.topk(beam, dim=1, largest=False).indices[still_live]
        live_ids = [sentence for sentence, alive in zip(live_ids, still_live_list) if alive]
        parent = (
            torch.arange(live, device=device)[still_live, None] * beam + top_beam[still_live].gather(1, keep)
        ).view(-1)
        new_token = top_token[still_live].gather(1, keep).view(-1, 1)
        scores = top_scores[still_live].gather(1, keep).view(-1)
        tokens = torch.cat([tokens.index_select(0, parent), new_token], dim=1)
        cache.reorder(parent)
        if not all(still_live_list):
            encoder = model.reorder_encoder_out(encoder, _live_rows(still_live, beam))

    best = []
    for hypotheses in finished:
        score, hypothesis = max(hypotheses, key=lambda h: h[0])
        best.append((hypothesis, score))
    return best


def _live_rows(still_live: Tensor, beam: int) -> Tensor:
    """Rows of the (live * beam) encoder output that belong to sentences still being decoded."""
    live_sentences = still_live.nonzero().squeeze(1)
    return (live_sentences[:, None] * beam + torch.arange(beam, device=still_live.device)).view(-1)
