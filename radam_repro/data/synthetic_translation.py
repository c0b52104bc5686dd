"""A synthetic translation task that needs no data: reverse the source, then substitute symbols.

Source: ``length`` symbols drawn uniformly from a ``vocab``-symbol alphabet, then ``</s>``.
Target: the source symbols reversed and mapped through a fixed random permutation ``pi`` of the
alphabet (drawn once from ``task_seed``), then ``</s>``. Symbol ``s`` has token id ``4 + s``
(ids 0-3 are fairseq's ``<s> <pad> </s> <unk>``), so source and target share one vocabulary of
``vocab + 4`` ids. A model that has not learned the mapping cannot beat ``ln(vocab)`` nats per
symbol; one that has reaches 0.

Training batch ``step`` of a run with seed ``seed`` is drawn from a generator seeded by
``(seed, step)``, so every batch is a pure function of both (deterministic, resumable, no data
state); validation batches come from a separate stream keyed by the task seed.
"""

from __future__ import annotations

import numpy as np
import torch

from radam_repro.data.bilingual import EOS, SPECIAL_SYMBOLS

FIRST_SYMBOL = len(SPECIAL_SYMBOLS)
TRAIN_STREAM, VALID_STREAM = 0, 1


def generator_for(*key: int) -> torch.Generator:
    """A torch generator seeded from an integer key via numpy's SeedSequence (no overlap between keys)."""
    seed = int(np.random.SeedSequence([k & 0xFFFFFFFF for k in key]).generate_state(1, dtype=np.uint64)[0])
    return torch.Generator().manual_seed(seed)


class SyntheticTranslation:
    """Reverse-and-substitute pairs; ``batch(seed, step, size)`` gives the collated batch."""

    def __init__(self, vocab: int = 32, length: int = 12, task_seed: int = 0):
        if vocab < 2 or length < 1:
            raise ValueError(
                f"synthetic translation needs vocab >= 2 and length >= 1 (got vocab={vocab}, length={length})"
            )
        self.vocab, self.length, self.task_seed = vocab, length, task_seed
        self.permutation = torch.randperm(vocab, generator=generator_for(task_seed))

    @property
    def num_tokens(self) -> int:
        """Size of the shared token vocabulary (specials included)."""
        return self.vocab + FIRST_SYMBOL

    def translate(self, symbols: torch.Tensor) -> torch.Tensor:
        """The target symbols of source symbols (batch, length): reversed, then permuted."""
        return self.permutation[symbols.flip(-1)]

    def batch(
        self, seed: int, step: int, size: int, device: torch.device | str = "cpu", stream: int = TRAIN_STREAM
    ) -> dict[str, torch.Tensor]:
        """Batch ``step`` of the random stream ``(stream, seed)``: src, prev_output_tokens, target, ntokens."""
        symbols = torch.randint(self.vocab, (size, self.length), generator=generator_for(stream, seed, step))
        eos = torch.full((size, 1), EOS, dtype=torch.long)
        src = torch.cat([symbols + FIRST_SYMBOL, eos], dim=1)
        target = torch.cat([self.translate(symbols) + FIRST_SYMBOL, eos], dim=1)
        prev = torch.cat([eos, target[:, :-1]], dim=1)
        batch = {
            "src_tokens": src,
            "prev_output_tokens": prev,
            "target": target,
            "ntokens": torch.tensor(target.numel()),
        }
        return {key: value.to(device) for key, value in batch.items()}
