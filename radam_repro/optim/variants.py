"""The paper's optimizer variants as thin classes over :class:`AdamFamily`.

Adam-vanilla, Adam-eps (eps = 1e-4) and Adam-warmup are :class:`Adam` with other settings
(warmup is a schedule, see :mod:`radam_repro.optim.schedules`); the untuned warmups of
Ma & Yarats (2019) are schedules too. Every class takes ``fused``: ``None`` (default) runs the
adaptive phase on torch's fused Adam/AdamW kernels where the device has them, ``False`` on foreach
kernels only (see :mod:`radam_repro.optim.adam_family`). The Adam keywords and their defaults (``lr, betas, eps,
weight_decay, decoupled_weight_decay, eps_placement, fused``) are :class:`AdamFamily`'s; a variant's signature
holds only its own.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch

from radam_repro.optim.adam_family import AdamFamily
from radam_repro.optim.rectification import hilton_multiplier, rectification
from radam_repro.optim.registry import register


@register("adam")
class Adam(AdamFamily):
    r"""Adam (Kingma & Ba); with a warmup schedule: Adam-warmup, with eps 1e-4: Adam-eps (Liu et al. Alg. 1).

    .. math::
        m_t = \beta_1 m_{t-1} + (1-\beta_1) g_t,\quad v_t = \beta_2 v_{t-1} + (1-\beta_2) g_t^2,\\
        \theta_t = \theta_{t-1}(1 - \alpha\lambda) - \alpha \frac{\sqrt{1-\beta_2^t}}{1-\beta_1^t}\,
        \frac{m_t}{\sqrt{v_t}+\epsilon}

    (``eps_placement="sqrt_v"``, as fairseq's Adam used for the paper's NMT baselines) or
    :math:`\alpha\,\hat m_t/(\sqrt{\hat v_t}+\epsilon)` (``"sqrt_vhat"``, torch.optim.Adam/AdamW).
    ``decoupled_weight_decay=False`` adds :math:`\lambda\theta` to the gradient (L2) instead.
    """


@register("adam_2k")
class Adam2k(AdamFamily):
    r"""Adam whose first freeze_steps updates only accumulate v_t (paper Sec. 3.2).

    Adam-2k (fairseq ``--adam-freeze``): for :math:`t \le K` only
    :math:`v_t = \beta_2 v_{t-1} + (1-\beta_2)g_t^2` is updated — :math:`m`, :math:`\theta` and
    weight decay stay frozen — while the step counter keeps counting; then plain :class:`Adam`
    (whose bias corrections therefore use :math:`t > K`).
    """

    def __init__(self, params: Iterable, *, freeze_steps: int = 2000, **adam: Any) -> None:
        super().__init__(params, freeze_steps=freeze_steps, **adam)

    def validate_group(self, group: dict[str, Any]) -> None:
        super().validate_group(group)
        if not isinstance(group["freeze_steps"], int) or group["freeze_steps"] < 0:
            raise ValueError(f"invalid freeze_steps={group['freeze_steps']!r}: must be an integer >= 0")

    def rule(self, group: dict[str, Any], step: int) -> tuple[str, float]:
        return ("freeze", 0.0) if step <= group["freeze_steps"] else ("adaptive", 1.0)


@register("radam")
class RAdam(AdamFamily):
    r"""Rectified Adam (paper Alg. 2): r_t-scaled step once rho_t > threshold, SGD-momentum (or no step) before.

    With :math:`\rho_\infty = 2/(1-\beta_2) - 1` and
    :math:`\rho_t = \rho_\infty - 2t\beta_2^t/(1-\beta_2^t)` (eqs. 4-5): if
    :math:`\rho_t > \text{threshold}` the Adam step is multiplied by the rectification term (eq. 6)

    .. math::
        r_t = \sqrt{\frac{(\rho_t-4)(\rho_t-2)\rho_\infty}{(\rho_\infty-4)(\rho_\infty-2)\rho_t}},

    otherwise the step is the un-adapted, bias-corrected SGD-momentum step
    :math:`\theta \leftarrow \theta - \alpha\,\hat m_t` (``degenerated_to_sgd=True``, the paper and
    torch.optim.RAdam) or no step at all (``False``, the official library's default since 2021;
    weight decay is then skipped too). ``threshold`` is 5 in the official code and torch, 4 in the
    paper's Alg. 2. Weight decay is decoupled (:math:`\theta \leftarrow \theta - \alpha\lambda\theta`)
    unless ``decoupled_weight_decay=False`` (L2).
    """

    def __init__(
        self, params: Iterable, *, threshold: float = 5.0, degenerated_to_sgd: bool = True, **adam: Any
    ) -> None:
        super().__init__(params, threshold=threshold, degenerated_to_sgd=degenerated_to_sgd, **adam)

    def validate_group(self, group: dict[str, Any]) -> None:
        super().validate_group(group)
        threshold = group["threshold"]
        if not isinstance(threshold, (int, float)) or threshold < 4:
            raise ValueError(
                f"invalid threshold={threshold!r}: must be >= 4 (r_t is undefined for rho_t <= 4; "
                "4 is the paper's Alg. 2, 5 the official code and torch)"
            )

    def rule(self, group: dict[str, Any], step: int) -> tuple[str, float]:
        r_t = rectification(group["betas"][1], step, group["threshold"])
        if r_t is not None:
            return "adaptive", r_t
        return ("sgd", 1.0) if group["degenerated_to_sgd"] else ("skip", 0.0)


@register("simplified_radam")
class SimplifiedRAdam(AdamFamily):
    r"""Adam with lr x sqrt(2/(1+beta2^t) - 1) (J. Hilton 2019): no threshold, no SGD phase.

    .. math:: c_t = \sqrt{2/(1+\beta_2^t) - 1} = \sqrt{(1-\beta_2^t)/(1+\beta_2^t)},

    RAdam's large-:math:`\rho` limit :math:`\sqrt{\rho_t/\rho_\infty}` with :math:`\rho_t` replaced by
    the effective sample size of the EMA. As with RAdam's :math:`r_t`, decoupled weight decay uses the
    un-multiplied lr.
    """

    def rule(self, group: dict[str, Any], step: int) -> tuple[str, float]:
        return "adaptive", hilton_multiplier(group["betas"][1], step)


@register("adam_gi")
class GIAdam(AdamFamily):
    r"""GI-Adam (Kalra & Barkeshli 2024, arXiv 2406.09405, Sec. 6): Adam whose second moment starts from the
    first gradient instead of zero, everything else (bias corrections included) unchanged.

    .. math::
        v_0 = g_1^2,\quad v_t = \beta_2 v_{t-1} + (1-\beta_2) g_t^2,\quad \hat v_t = v_t / (1-\beta_2^t)

    with :class:`Adam`'s step. Kept, the bias correction over-corrects the early :math:`v_t` (:math:`v_1 = g_1^2`, so
    :math:`\hat v_1 = g_1^2/(1-\beta_2)`): the first steps are :math:`\sqrt{1-\beta_2^t}` times Adam's, a built-in
    warmup over about :math:`1/(1-\beta_2)` steps. :math:`g_1` is the gradient the first step uses (with L2:
    :math:`g + \lambda\theta`; under a GradScaler: unscaled; a non-finite coordinate starts at 0, as Adam's).
    """

    def initial_exp_avg_sq(
        self, group: dict[str, Any], p: torch.Tensor, grad: torch.Tensor, grad_scale: torch.Tensor | None
    ) -> torch.Tensor:
        g = grad if grad_scale is None else grad / grad_scale.to(grad.device)
        if group["weight_decay"] != 0 and not group["decoupled_weight_decay"]:
            g = g + group["weight_decay"] * p
        g = torch.view_as_real(g) if torch.is_complex(g) else g
        v = torch.nan_to_num(g * g, nan=0.0, posinf=0.0)
        return torch.view_as_complex(v) if torch.is_complex(p) else v
