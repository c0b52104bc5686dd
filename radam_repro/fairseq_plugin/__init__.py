"""radam_repro's optimizers inside ``fairseq-train --user-dir radam_repro/fairseq_plugin``.

fairseq imports this folder (never radam_repro itself), which registers every algorithm of the optimizer
registry (:mod:`radam_repro.optim.registry`) as ``--optimizer radam_repro_<algorithm>``:

=================================  ==============================================================
``--optimizer``                    optimizer (:mod:`radam_repro.optim`)
=================================  ==============================================================
``radam_repro_adam``               Adam (Adam-vanilla, Adam-eps with ``--adam-eps 1e-4``, Adam-warmup)
``radam_repro_radam``              RAdam: ``--radam-threshold`` (5), ``--radam-no-sgd`` (skip, not SGD)
``radam_repro_adam_2k``            Adam-2k: ``--freeze-steps`` (2000)
``radam_repro_simplified_radam``   Hilton's simplified RAdam
``radam_repro_adam_gi``            GI-Adam (v_0 = g_1^2, Kalra & Barkeshli 2024)
=================================  ==============================================================

Each option is a hyperparameter of the class with the class's default (:func:`fairseq_options`), under fairseq's
name where fairseq has one: ``--adam-betas``, ``--adam-eps``, ``--weight-decay`` (decoupled, as fairseq's ``adam``;
``--l2-weight-decay`` adds it to the gradient instead), ``--eps-placement`` (``sqrt_v``, fairseq's ``adam``;
``sqrt_vhat``, torch.optim.Adam). The lr and its schedule stay fairseq's (``--lr``, ``--lr-scheduler``).
"""

import ast
import importlib.util
import os
import sys
from collections.abc import Collection
from dataclasses import dataclass, field, make_dataclass
from typing import Any

# fairseq put radam_repro/ first on sys.path to import this folder as `fairseq_plugin`; take it off again so that
# radam_repro's subpackages (data, models, optim, ...) cannot shadow top-level modules of the same names
_PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if sys.path and sys.path[0] == _PACKAGE_DIR:
    sys.path.pop(0)

from radam_repro.optim import OPTIMIZERS, OptimInfo  # noqa: E402

FAIRSEQ_NAMES = {"betas": "adam_betas", "eps": "adam_eps", "threshold": "radam_threshold"}
NEGATED = {"decoupled_weight_decay": "l2_weight_decay", "degenerated_to_sgd": "radam_no_sgd"}  # flags that invert
NOT_OPTIONS = ("lr", "fused")  # the lr is fairseq's --lr; fairseq picks its own kernels
HELP = {
    "adam_betas": "betas for the Adam-family optimizer",
    "adam_eps": "epsilon for the Adam-family optimizer",
    "l2_weight_decay": "add weight decay to the gradient (L2), not decoupled",
    "eps_placement": "sqrt_v: sqrt(v_t)+eps (fairseq adam); sqrt_vhat",
    "radam_threshold": "rectify once rho_t > this (5 official, 4 paper)",
    "radam_no_sgd": "skip updates while rho_t <= threshold (no SGD step)",
    "freeze_steps": "Adam-2k: updates that only accumulate v_t",
}


@dataclass(frozen=True)
class Option:
    """A fairseq option of an algorithm: its name, type, default and help, and the class keyword it sets."""

    name: str
    type: Any
    default: Any
    help: str
    keyword: str


def fairseq_options(info: OptimInfo) -> list[Option]:
    """The fairseq options of a registered algorithm, derived from its class's hyperparameters and defaults."""
    options = []
    for hp in info.hyperparameters:
        if hp.name in NOT_OPTIONS:
            continue
        if hp.name in NEGATED:
            name, kind, default = NEGATED[hp.name], bool, not hp.default
        elif hp.name == "betas":  # fairseq passes betas as a string, "(0.9, 0.999)"
            name, kind, default = FAIRSEQ_NAMES[hp.name], Any, str(tuple(hp.default))
        else:
            name, kind, default = FAIRSEQ_NAMES.get(hp.name, hp.name), hp.type, hp.default
        options.append(Option(name, kind, default, HELP.get(name, hp.name.replace("_", " ")), hp.name))
    return options


def optimizer_kwargs(info: OptimInfo, cfg: Any) -> dict[str, Any]:
    """The class's keyword arguments from fairseq's parsed options (``cfg``)."""
    kwargs = {"lr": cfg.lr[0] if isinstance(cfg.lr, Collection) else cfg.lr}
    for option in fairseq_options(info):
        value = getattr(cfg, option.name)
        if option.keyword in NEGATED:
            value = not value
        elif option.keyword == "betas":
            value = tuple(ast.literal_eval(value) if isinstance(value, str) else value)
        kwargs[option.keyword] = value
    return kwargs


def _register_with_fairseq() -> None:
    from typing import List  # noqa: UP035 (fairseq's own optimizer configs)

    from fairseq.dataclass import FairseqDataclass
    from fairseq.optim import FairseqOptimizer, register_optimizer
    from omegaconf import II

    class RadamReproOptimizer(FairseqOptimizer):
        """A :mod:`radam_repro.optim` optimizer behind fairseq's optimizer interface."""

        info: OptimInfo

        def __init__(self, cfg, params):
            super().__init__(cfg)
            self._optimizer = self.info.cls(params, **self.optimizer_config)

        @property
        def optimizer_config(self) -> dict[str, Any]:
            return optimizer_kwargs(self.info, self.cfg)

    for info in OPTIMIZERS.values():
        fields = [(o.name, o.type, field(default=o.default, metadata={"help": o.help})) for o in fairseq_options(info)]
        fields.append(("lr", List[float], II("optimization.lr")))  # noqa: UP006
        config = make_dataclass(f"RadamRepro{info.cls.__name__}Config", fields, bases=(FairseqDataclass,))
        optimizer = type(f"RadamRepro{info.cls.__name__}", (RadamReproOptimizer,), {"info": info})
        register_optimizer(f"radam_repro_{info.name}", dataclass=config)(optimizer)


if importlib.util.find_spec("fairseq") is not None:  # fairseq imports this folder; without fairseq it only derives
    _register_with_fairseq()
