"""RAdam's variance rectification and its follow-ups, as pure functions of (beta2, t).

Notation of Liu et al. (2019), Sec. 3-4, with t the 1-based step:

* rho_inf = 2 / (1 - beta2) - 1                                   (eq. 4)
* rho_t   = rho_inf - 2 t beta2^t / (1 - beta2^t)                 (eq. 5 / Alg. 2)
* r_t     = sqrt((rho_t - 4)(rho_t - 2) rho_inf / ((rho_inf - 4)(rho_inf - 2) rho_t))   (eq. 6)
  defined while rho_t > 4; RAdam rectifies only when rho_t exceeds a threshold
  (4 in the paper's Alg. 2, 5 in the official code and torch.optim.RAdam).
* Hilton (2019): sqrt(2 / (1 + beta2^t) - 1) = sqrt((1 - beta2^t) / (1 + beta2^t)).
* Ma & Yarats (2019) untuned warmups: min(1, t (1 - beta2) / 2) and 1 - exp(-(1 - beta2) t).
"""

from __future__ import annotations

import math


def rho_inf(beta2: float) -> float:
    """Maximum length of the approximated simple moving average, eq. (4)."""
    return 2.0 / (1.0 - beta2) - 1.0


def rho_t(beta2: float, t: int) -> float:
    """Length of the approximated SMA at step t (1-based), eq. (5)."""
    beta2_t = beta2**t
    return rho_inf(beta2) - 2.0 * t * beta2_t / (1.0 - beta2_t)


def rectification(beta2: float, t: int, threshold: float = 5.0) -> float | None:
    """r_t of eq. (6) if rho_t > threshold, else None (the un-adapted phase)."""
    r_inf, r = rho_inf(beta2), rho_t(beta2, t)
    if r <= threshold:
        return None
    return math.sqrt((r - 4.0) * (r - 2.0) * r_inf / ((r_inf - 4.0) * (r_inf - 2.0) * r))


def hilton_multiplier(beta2: float, t: int) -> float:
    """Simplified RAdam (J. Hilton, 2019): sqrt(2 / (1 + beta2^t) - 1)."""
    beta2_t = beta2**t
    return math.sqrt((1.0 - beta2_t) / (1.0 + beta2_t))


def untuned_linear_warmup(beta2: float, t: int) -> float:
    """Ma & Yarats (2019): omega_t = min(1, t (1 - beta2) / 2), i.e. linear over 2/(1-beta2) steps."""
    return min(1.0, t * (1.0 - beta2) / 2.0)


def untuned_exponential_warmup(beta2: float, t: int) -> float:
    """Ma & Yarats (2019): omega_t = 1 - exp(-(1 - beta2) t)."""
    return 1.0 - math.exp(-(1.0 - beta2) * t)
