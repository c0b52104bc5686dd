"""Early diagnostics of the update (Kosson et al. 2024) and of the loss's curvature (Kalra & Barkeshli 2024).

* :class:`UpdateSize`: at a logging step, from a copy of the parameters taken just before the optimizer step,
  the relative update ``||d||/||theta_t||``, the angle between theta_t and theta_{t+1} and the update's RMS
  ``||d||/sqrt(n)`` (d = theta_{t+1} - theta_t): over all parameters (``update/relative``, ``update/angle``,
  ``update/rms``), per weight matrix (``update/relative/<name>``, ``update/angle/<name>``; biases and gains often
  start at zero, where neither is defined) and the largest of those (``update/relative_max``, ``update/angle_max``).
  Computed on the device; the host reads them once, with the logging step's other values.
* :func:`top_hessian_eigenvalue`: the eigenvalue of largest magnitude of the Hessian of a loss, by power
  iteration on Hessian-vector products (double backward), ``hessian/top_eigenvalue``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch


def angle(a: list[torch.Tensor], b: list[torch.Tensor], norm_a: torch.Tensor, norm_b: torch.Tensor) -> torch.Tensor:
    """The angle (radians) between a and b, each a list of tensors taken as one vector, as
    2 atan2(|a/|a| - b/|b||, |a/|a| + b/|b||): accurate for tiny angles, which arccos of the cosine loses to rounding."""
    unit_a, unit_b = torch._foreach_div(a, norm_a), torch._foreach_div(b, norm_b)
    return 2 * torch.atan2(_norm(torch._foreach_sub(unit_a, unit_b)), _norm(torch._foreach_add(unit_a, unit_b)))


class UpdateSize:
    """Relative, angular and RMS size of one optimizer step: :meth:`before` the step, :meth:`after` it."""

    def __init__(self, named_params: dict[str, torch.Tensor]) -> None:
        self.params = {name: p for name, p in named_params.items() if p.requires_grad}
        self.previous: dict[str, torch.Tensor] | None = None

    def before(self) -> None:
        """Keep a copy of the parameters (only at the step before a logging step)."""
        self.previous = {name: p.detach().clone() for name, p in self.params.items()}

    @torch.no_grad()
    def after(self) -> dict[str, torch.Tensor]:
        """The step's diagnostics as 0-d device tensors (no host sync); frees the copy."""
        previous, self.previous = self.previous, None
        old = [previous[name].float() for name in self.params]
        new = [p.detach().float() for p in self.params.values()]
        norms_old, norms_new = torch.stack(torch._foreach_norm(old)), torch.stack(torch._foreach_norm(new))
        norms_delta = torch.stack(torch._foreach_norm(torch._foreach_sub(new, old)))
        norm_old, norm_new = torch.linalg.vector_norm(norms_old), torch.linalg.vector_norm(norms_new)
        delta = torch.linalg.vector_norm(norms_delta)
        out = {
            "update/relative": delta / norm_old,
            "update/angle": angle(old, new, norm_old, norm_new),
            "update/rms": delta / sum(p.numel() for p in new) ** 0.5,
        }
        names = list(self.params)
        matrices = [i for i, p in enumerate(new) if p.dim() >= 2]
        if matrices:
            relative = {f"update/relative/{names[i]}": norms_delta[i] / norms_old[i] for i in matrices}
            angles = {
                f"update/angle/{names[i]}": angle([old[i]], [new[i]], norms_old[i], norms_new[i]) for i in matrices
            }
            out["update/relative_max"] = torch.stack(list(relative.values())).max()
            out["update/angle_max"] = torch.stack(list(angles.values())).max()
            out.update(relative | angles)
        return out


def _norm(tensors: list[torch.Tensor]) -> torch.Tensor:
    """The 2-norm of a list of tensors taken as one vector."""
    return torch.linalg.vector_norm(torch.stack(torch._foreach_norm(tensors)))


def top_hessian_eigenvalue(
    loss_fn: Callable[[], torch.Tensor], params: list[torch.Tensor], iters: int, generator: torch.Generator
) -> torch.Tensor:
    """The Hessian eigenvalue of largest magnitude of ``loss_fn()`` w.r.t. ``params`` after ``iters`` power-iteration
    steps v <- Hv / |Hv| from a random start (Rayleigh quotient v.Hv of the last v; a 0-d device tensor)."""
    grads = torch.autograd.grad(loss_fn(), params, create_graph=True, allow_unused=True)
    params, grads = zip(*[(p, g) for p, g in zip(params, grads) if g is not None])  # parameters the loss uses
    v = [torch.randn(p.shape, generator=generator, dtype=p.dtype).to(p.device) for p in params]
    eigenvalue = torch.zeros((), device=params[0].device)
    for _ in range(iters):
        v = torch._foreach_div(v, _norm(v))
        grad_dot_v = sum((g * x).sum() for g, x in zip(grads, v))
        hv = torch.autograd.grad(grad_dot_v, params, retain_graph=True, allow_unused=True)
        hv = [torch.zeros_like(p) if h is None else h.detach() for p, h in zip(params, hv)]
        eigenvalue = sum((x * h).sum() for x, h in zip(v, hv))
        v = hv
    return eigenvalue
