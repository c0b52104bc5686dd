"""SGD as the paper's CIFAR baseline ran it: torch's SGD with momentum 0.9 and coupled L2 weight decay."""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch

from radam_repro.optim.adam_family import check_range
from radam_repro.optim.registry import register


@register("sgd")
class SGD(torch.optim.SGD):
    """SGD with momentum and coupled L2 weight decay (the official CIFAR baseline).

    ``torch.optim.SGD`` with the official recipe's defaults; invalid values are refused naming the keyword;
    ``fused=True`` runs torch's fused SGD kernel.
    """

    def __init__(
        self,
        params: Iterable,
        lr: float = 0.1,
        momentum: float = 0.9,
        nesterov: bool = False,
        weight_decay: float = 0.0,
        fused: bool | None = None,
    ) -> None:
        for name, value in (("lr", lr), ("momentum", momentum), ("weight_decay", weight_decay)):
            check_range(name, value, 0.0, math.inf)
        super().__init__(params, lr=lr, momentum=momentum, nesterov=nesterov, weight_decay=weight_decay, fused=fused)
