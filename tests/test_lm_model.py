"""The LSTM language model: adaptive softmax vs a dense log-softmax, initialisation, carried hidden state."""

from __future__ import annotations

import math

import pytest
import torch

from radam_repro.models.lstm_lm import LSTMLanguageModel

torch.set_num_threads(1)


def dense_log_probs(softmax: torch.nn.AdaptiveLogSoftmaxWithLoss, features: torch.Tensor) -> torch.Tensor:
    """log p(w) for every word from the adaptive softmax's weights, written out densely.

    Shortlist word w: log_softmax(head)[w]; word w of cluster i:
    log_softmax(head)[shortlist + i] + log_softmax(W_i2 W_i1 h)[w - cutoff_i].
    """
    head = torch.log_softmax(features @ softmax.head.weight.T + softmax.head.bias, dim=-1)
    parts = [head[:, : softmax.shortlist_size]]
    for i, (first, second) in enumerate(softmax.tail):
        tail = torch.log_softmax(features @ first.weight.T @ second.weight.T, dim=-1)
        parts.append(head[:, softmax.shortlist_size + i, None] + tail)
    return torch.cat(parts, dim=-1)


def test_adaptive_softmax_loss_equals_a_dense_log_softmax():
    torch.manual_seed(0)
    vocab, bptt, batch = 50, 6, 3
    model = (
        LSTMLanguageModel(vocab, embedding_dim=8, hidden_size=16, num_layers=2, cutoffs=[10, 30, 4000]).double().eval()
    )
    assert model.softmax.cutoffs == [10, 30, 50]  # the cutoff beyond the vocabulary is dropped
    assert [first.out_features for first, _ in model.softmax.tail] == [4, 1]  # 16 // 4**(i+1), as the official code
    inputs, targets = torch.randint(vocab, (bptt, batch)), torch.randint(vocab, (bptt, batch))
    targets[0] = torch.tensor([3, 17, 42])  # one word per cluster at least

    log_probs, _ = model(inputs, targets)
    features, _ = model.lstm(model.embedding(inputs))
    dense = dense_log_probs(model.softmax, features.reshape(-1, 16))

    torch.testing.assert_close(dense.logsumexp(-1), torch.zeros(bptt * batch, dtype=torch.float64))
    torch.testing.assert_close(log_probs.reshape(-1), dense.gather(1, targets.reshape(-1, 1)).squeeze(1))
    torch.testing.assert_close(-log_probs.mean(), torch.nn.functional.nll_loss(dense, targets.reshape(-1)))
    torch.testing.assert_close(model.softmax.log_prob(features.reshape(-1, 16)), dense)


def test_official_initialisation():
    torch.manual_seed(0)
    model = LSTMLanguageModel(3000, embedding_dim=64, hidden_size=128, num_layers=2, cutoffs=[500, 2000])
    bound = math.sqrt(3 / 64)
    assert model.embedding.weight.abs().max() <= bound and model.embedding.weight.abs().max() > 0.99 * bound
    for name, param in model.lstm.named_parameters():
        if name.startswith("weight"):
            bound = math.sqrt(6 / (param.shape[0] / 4 + param.shape[1]))  # rows/4 + cols
            assert bound * 0.99 < param.abs().max() <= bound, name
        else:
            assert param[128:256].eq(1).all() and param[:128].eq(0).all() and param[256:].eq(0).all(), name
    linears = [m for m in model.softmax.modules() if isinstance(m, torch.nn.Linear)]
    for linear in linears:
        fan_out, fan_in = linear.weight.shape
        assert linear.weight.std().item() == pytest.approx(math.sqrt(2 / (fan_in + fan_out)), rel=0.1)
    assert model.softmax.head.bias.eq(0).all()


def test_hidden_state_carries_across_windows():
    torch.manual_seed(0)
    model = LSTMLanguageModel(100, embedding_dim=8, hidden_size=16, num_layers=2, cutoffs=[20]).eval()
    inputs, targets = torch.randint(100, (10, 4)), torch.randint(100, (10, 4))
    whole, _ = model(inputs, targets)
    first, hidden = model(inputs[:4], targets[:4])
    second, _ = model(inputs[4:], targets[4:], hidden)
    torch.testing.assert_close(torch.cat([first, second]), whole)
    fresh, _ = model(inputs[4:], targets[4:])
    assert not torch.allclose(fresh, second)


def test_paper_architecture_on_the_full_vocabulary():
    vocab = 793_471  # 1B words with count > 3, plus <unk> and <eos>
    with torch.device("meta"):
        model = LSTMLanguageModel(vocab)
    assert (model.lstm.num_layers, model.lstm.hidden_size, model.lstm.input_size, model.lstm.dropout) == (
        2,
        2048,
        300,
        0.1,
    )
    assert model.dropout.p == 0.1 and model.softmax.cutoffs == [4000, 40000, 200000, vocab]
    assert [tuple(lin.weight.shape) for pair in model.softmax.tail for lin in pair] == [
        (512, 2048),
        (36000, 512),
        (128, 2048),
        (160000, 128),
        (32, 2048),
        (vocab - 200000, 32),
    ]
    assert tuple(model.softmax.head.weight.shape) == (4003, 2048)


def test_cutoffs_all_beyond_the_vocabulary_are_an_error():
    with pytest.raises(ValueError, match=r"cutoff.*vocabulary size 100.*task.model.cutoffs"):
        LSTMLanguageModel(100, embedding_dim=4, hidden_size=8, cutoffs=[4000, 40000])
