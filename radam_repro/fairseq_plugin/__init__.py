"""radam_repro's optimizers inside ``fairseq-train --user-dir radam_repro/fairseq_plugin``.

fairseq imports this folder (never radam_repro itself), which registers:

=================================  ==============================================================
``--optimizer``                    optimizer (:mod:`radam_repro.optim`)
=================================  ==============================================================
``radam_repro_adam``               Adam (Adam-vanilla, Adam-eps with ``--adam-eps 1e-4``, Adam-warmup)
``radam_repro_radam``              RAdam: ``--radam-threshold`` (5), ``--radam-no-sgd`` (skip, not SGD)
``radam_repro_adam_2k``            Adam-2k: ``--freeze-steps`` (2000)
``radam_repro_simplified_radam``   Hilton's simplified RAdam
=================================  ==============================================================

All take ``--adam-betas``, ``--adam-eps``, ``--weight-decay`` (decoupled, as fairseq's ``adam``;
``--l2-weight-decay`` adds it to the gradient instead) and ``--eps-placement`` (``sqrt_v``, fairseq's
``adam``; ``sqrt_vhat``, torch.optim.Adam). The lr schedule stays fairseq's (``--lr-scheduler``).
"""

import ast
import os
import sys
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any, List  # noqa: UP035

from fairseq.dataclass import FairseqDataclass
from fairseq.optim import FairseqOptimizer, register_optimizer
from omegaconf import II

# fairseq put radam_repro/ first on sys.path to import this folder as `fairseq_plugin`; take it off again so that
# radam_repro's subpackages (data, models, optim, ...) cannot shadow top-level modules of the same names
_PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if sys.path and sys.path[0] == _PACKAGE_DIR:
    sys.path.pop(0)

from radam_repro.optim import Adam, Adam2k, RAdam, SimplifiedRAdam  # noqa: E402


@dataclass
class AdamFamilyConfig(FairseqDataclass):
    adam_betas: Any = field(default="(0.9, 0.999)", metadata={"help": "betas for the Adam-family optimizer"})
    adam_eps: float = field(default=1e-8, metadata={"help": "epsilon for the Adam-family optimizer"})
    weight_decay: float = field(default=0.0, metadata={"help": "weight decay"})
    l2_weight_decay: bool = field(
        default=False, metadata={"help": "add weight decay to the gradient (L2), not decoupled"}
    )
    eps_placement: str = field(default="sqrt_v", metadata={"help": "sqrt_v: sqrt(v_t)+eps (fairseq adam); sqrt_vhat"})
    lr: List[float] = II("optimization.lr")  # noqa: UP006 (as fairseq's own optimizer configs)


@dataclass
class RAdamConfig(AdamFamilyConfig):
    radam_threshold: float = field(default=5.0, metadata={"help": "rectify once rho_t > this (5 official, 4 paper)"})
    radam_no_sgd: bool = field(default=False, metadata={"help": "skip updates while rho_t <= threshold (no SGD step)"})


@dataclass
class Adam2kConfig(AdamFamilyConfig):
    freeze_steps: int = field(default=2000, metadata={"help": "Adam-2k: updates that only accumulate v_t"})


class RadamReproOptimizer(FairseqOptimizer):
    """A :mod:`radam_repro.optim` optimizer behind fairseq's optimizer interface."""

    optimizer_class: type = Adam

    def __init__(self, cfg, params):
        super().__init__(cfg)
        self._optimizer = self.optimizer_class(params, **self.optimizer_config)

    @property
    def optimizer_config(self) -> dict[str, Any]:
        cfg = self.cfg
        betas = ast.literal_eval(cfg.adam_betas) if isinstance(cfg.adam_betas, str) else cfg.adam_betas
        return dict(
            lr=cfg.lr[0] if isinstance(cfg.lr, Collection) else cfg.lr,
            betas=tuple(betas),
            eps=cfg.adam_eps,
            weight_decay=cfg.weight_decay,
            decoupled_weight_decay=not cfg.l2_weight_decay,
            eps_placement=cfg.eps_placement,
            **self.extra_config,
        )

    @property
    def extra_config(self) -> dict[str, Any]:
        return {}


@register_optimizer("radam_repro_adam", dataclass=AdamFamilyConfig)
class RadamReproAdam(RadamReproOptimizer):
    optimizer_class = Adam


@register_optimizer("radam_repro_simplified_radam", dataclass=AdamFamilyConfig)
class RadamReproSimplifiedRAdam(RadamReproOptimizer):
    optimizer_class = SimplifiedRAdam


@register_optimizer("radam_repro_radam", dataclass=RAdamConfig)
class RadamReproRAdam(RadamReproOptimizer):
    optimizer_class = RAdam

    @property
    def extra_config(self) -> dict[str, Any]:
        return dict(threshold=self.cfg.radam_threshold, degenerated_to_sgd=not self.cfg.radam_no_sgd)


@register_optimizer("radam_repro_adam_2k", dataclass=Adam2kConfig)
class RadamReproAdam2k(RadamReproOptimizer):
    optimizer_class = Adam2k

    @property
    def extra_config(self) -> dict[str, Any]:
        return dict(freeze_steps=self.cfg.freeze_steps)
