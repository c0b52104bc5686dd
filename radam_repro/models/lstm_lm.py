"""The One-Billion-Word LSTM language model of the RAdam paper (official ``train_1bw.py`` defaults).

embedding (300) -> dropout -> LSTM (2 layers × 2048, dropout between layers) -> dropout
-> ``nn.AdaptiveLogSoftmaxWithLoss`` (cutoffs 4000/40000/200000, tail projections in/4^(i+1),
exactly the official ``AdaptiveSoftmax`` structure). No projection between LSTM and softmax
(official ``label_dim=-1``). On CUDA ``nn.LSTM`` runs cuDNN.

Initialisation (official ``rand_ini``): embedding U(±√(3/dim)); LSTM weights U(±√(6/(rows/4 + cols)))
with biases 0 except the forget gate's 1 (in both ``bias_ih`` and ``bias_hh``); softmax weights
Xavier-normal (official ``adaptive.py``), head bias 0.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

Hidden = tuple[torch.Tensor, torch.Tensor]


class LSTMLanguageModel(nn.Module):
    def __init__(
        self,
        vocab_size: int,
        embedding_dim: int = 300,
        hidden_size: int = 2048,
        num_layers: int = 2,
        dropout: float = 0.1,
        cutoffs: Sequence[int] = (4000, 40000, 200000),
        div_value: float = 4.0,
    ):
        super().__init__()
        kept = [c for c in cutoffs if c < vocab_size]
        if not kept:
            raise ValueError(
                f"every adaptive-softmax cutoff in {list(cutoffs)} is >= the vocabulary size "
                f"{vocab_size}; set task.model.cutoffs to values below {vocab_size}"
            )
        self.embedding = nn.Embedding(vocab_size, embedding_dim)
        self.dropout = nn.Dropout(dropout)
        self.lstm = nn.LSTM(embedding_dim, hidden_size, num_layers, dropout=dropout if num_layers > 1 else 0.0)
        self.softmax = nn.AdaptiveLogSoftmaxWithLoss(hidden_size, vocab_size, kept, div_value=div_value, head_bias=True)
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        dim = self.embedding.embedding_dim
        nn.init.uniform_(self.embedding.weight, -math.sqrt(3.0 / dim), math.sqrt(3.0 / dim))
        hidden = self.lstm.hidden_size
        for name, param in self.lstm.named_parameters():
            if name.startswith("weight"):
                bound = math.sqrt(6.0 / (param.shape[0] / 4 + param.shape[1]))
                nn.init.uniform_(param, -bound, bound)
            else:
                param.zero_()
                param[hidden : 2 * hidden] = 1.0  # forget gate (PyTorch gate order i, f, g, o)
        for module in self.softmax.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_normal_(module.weight)
                if module.bias is not None:
                    module.bias.zero_()

    def forward(
        self, inputs: torch.Tensor, targets: torch.Tensor, hidden: Hidden | None = None
    ) -> tuple[torch.Tensor, Hidden]:
        """log p(targets | inputs, hidden) of shape (bptt, batch) and the final hidden state.

        ``inputs``/``targets``: (bptt, batch) token ids; ``hidden``: (h, c), each (layers, batch, hidden).
        """
        features, hidden = self.lstm(self.dropout(self.embedding(inputs)), hidden)
        features = self.dropout(features)
        log_probs = self.softmax(features.reshape(-1, features.shape[-1]), targets.reshape(-1)).output
        return log_probs.view_as(targets), hidden
