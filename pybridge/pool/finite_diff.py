"""Finite-difference gradients with every point evaluated in parallel: a ready ``jac=``.

For simulators without adjoints, and for SciPy methods (or versions) that take no ``workers``
option. The steps follow SciPy's own rule (``scipy.optimize.approx_derivative``): a relative
step of sqrt(eps) (forward, "2-point") or eps^(1/3) (central, "3-point") times max(1, |x|),
signed like x, made exactly representable, and turned around or made one-sided near a bound.
So the gradient is bit for bit the one SciPy computes serially, only its n + 1 (or 2n)
evaluations run side by side on the pool.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Optional, Sequence, Tuple, Union

import numpy as np

if TYPE_CHECKING:
    from .pool import Pool

__all__ = ["FiniteDifferences"]

_EPS = np.finfo(np.float64).eps
_RELATIVE_STEP = {"2-point": _EPS**0.5, "3-point": _EPS ** (1 / 3)}


class FiniteDifferences:
    """The gradient of the pool's cost by finite differences, as a ``jac=`` callable.

    >>> import numpy as np
    >>> from scipy.optimize import minimize
    >>> import pybridge
    >>> from pybridge.paths import bundled_simulator
    >>> with pybridge.Pool([bundled_simulator("pybridge-rosenbrock")], workers=2, n_params=3) as pool:
    ...     bounds = [(-2.0, 2.0)] * 3
    ...     gradient = pybridge.FiniteDifferences(pool, bounds=bounds)
    ...     result = minimize(pool, np.zeros(3), jac=gradient, bounds=bounds, method="L-BFGS-B")
    >>> np.round(result.x, 3)
    array([1., 1., 1.])

    Parameters
    ----------
    pool:
        A :class:`~pybridge.Pool` (or anything with its ``map``).
    method:
        ``"2-point"`` (forward: n + 1 evaluations) or ``"3-point"`` (central: 2n, more accurate).
    rel_step:
        The relative step, as SciPy's ``rel_step`` (default: sqrt(eps) or eps^(1/3)).
    abs_step:
        An absolute step instead, as SciPy's ``abs_step``. SciPy's own L-BFGS-B, BFGS and CG
        use ``abs_step=1e-8`` (their ``eps`` option): pass it to get their gradients exactly.
    bounds:
        ``scipy.optimize.Bounds`` or a sequence of ``(low, high)`` pairs (None: unbounded): no
        point is evaluated outside them.
    """

    def __init__(
        self,
        pool: "Pool | Any",  # anything with the pool's map and call (pybridge.minimize passes its objective)
        method: str = "2-point",
        rel_step: Optional[Union[float, Sequence[float]]] = None,
        bounds: Any = None,
        abs_step: Optional[Union[float, Sequence[float]]] = None,
    ) -> None:
        if method not in _RELATIVE_STEP:
            raise ValueError(f"method must be '2-point' or '3-point', not {method!r}")
        self.pool = pool
        self.method = method
        if rel_step is not None and abs_step is not None:
            raise ValueError("give rel_step or abs_step, not both")
        self.rel_step = None if rel_step is None else np.asarray(rel_step, dtype=float)
        self.abs_step = None if abs_step is None else np.asarray(abs_step, dtype=float)
        self._bounds = bounds
        #: Evaluations made for gradients so far.
        self.nfev = 0

    def __call__(self, x: "np.typing.ArrayLike") -> np.ndarray:
        x0 = np.asarray(x, dtype=float).copy()
        lower, upper = _bounds(self._bounds, x0.size)
        if np.any((x0 < lower) | (x0 > upper)):
            raise ValueError("x lies outside the bounds given to FiniteDifferences")
        steps = self._steps(x0)
        if self.method == "2-point":
            steps = _one_sided_within(x0, steps, lower, upper)
            points = [x0] + [_moved(x0, i, steps[i]) for i in range(x0.size)]
            values = list(self.pool.map(self.pool, points))
            self.nfev += len(points)
            f0 = values[0]
            gradient = np.array([(values[1 + i] - f0) / ((x0[i] + steps[i]) - x0[i]) for i in range(x0.size)])
        else:
            steps, one_sided = _central_within(x0, steps, lower, upper)
            points = []
            for i in range(x0.size):
                if one_sided[i]:
                    points += [_moved(x0, i, steps[i]), _moved(x0, i, 2 * steps[i])]
                else:
                    points += [_moved(x0, i, -steps[i]), _moved(x0, i, steps[i])]
            need_f0 = bool(one_sided.any())
            values = list(self.pool.map(self.pool, ([x0] if need_f0 else []) + points))
            self.nfev += len(values)
            f0 = values.pop(0) if need_f0 else 0.0
            gradient = np.empty(x0.size)
            for i in range(x0.size):
                f1, f2 = values[2 * i], values[2 * i + 1]
                far = points[2 * i + 1][i]
                if one_sided[i]:
                    gradient[i] = (-3.0 * f0 + 4 * f1 - f2) / (far - x0[i])
                else:
                    gradient[i] = (f2 - f1) / (far - points[2 * i][i])
        return gradient

    def _steps(self, x0: np.ndarray) -> np.ndarray:
        """SciPy's step rule: relative, signed like x (+ at 0), never a step that vanishes in x + h."""
        relative = _RELATIVE_STEP[self.method]
        sign = (x0 >= 0).astype(float) * 2 - 1
        default = relative * sign * np.maximum(1.0, np.abs(x0))
        if self.abs_step is not None:
            steps = np.broadcast_to(self.abs_step, x0.shape).astype(float)
        elif self.rel_step is not None:
            steps = self.rel_step * sign * np.abs(x0)
        else:
            return default
        return np.where(((x0 + steps) - x0) == 0, default, steps)


def _moved(x0: np.ndarray, i: int, step: float) -> np.ndarray:
    x = x0.copy()
    x[i] = x0[i] + step
    return x


def _bounds(bounds: Any, n: int) -> Tuple[np.ndarray, np.ndarray]:
    if bounds is None:
        return np.full(n, -np.inf), np.full(n, np.inf)
    if hasattr(bounds, "lb") and hasattr(bounds, "ub"):  # scipy.optimize.Bounds
        lower, upper = np.broadcast_to(bounds.lb, n), np.broadcast_to(bounds.ub, n)
    else:
        pairs = list(bounds)
        if len(pairs) != n:
            raise ValueError(f"bounds has {len(pairs)} pairs for {n} parameters")
        lower = np.array([-np.inf if low is None else low for low, _ in pairs], dtype=float)
        upper = np.array([np.inf if high is None else high for _, high in pairs], dtype=float)
    return np.asarray(lower, dtype=float), np.asarray(upper, dtype=float)


def _one_sided_within(x0: np.ndarray, h: np.ndarray, lower: np.ndarray, upper: np.ndarray) -> np.ndarray:
    """Forward steps that stay inside the bounds: turned around where that fits, else as long as
    the wider side allows."""
    if np.all(np.isneginf(lower) & np.isposinf(upper)):
        return h
    h = h.copy()
    below, above = x0 - lower, upper - x0
    moved = x0 + h
    outside = (moved < lower) | (moved > upper)
    fits = np.abs(h) <= np.maximum(below, above)
    h[outside & fits] *= -1
    up = (above >= below) & ~fits
    h[up] = above[up]
    down = (above < below) & ~fits
    h[down] = -below[down]
    return h


def _central_within(
    x0: np.ndarray, h: np.ndarray, lower: np.ndarray, upper: np.ndarray
) -> Tuple[np.ndarray, np.ndarray]:
    """Central steps where both sides fit; else one-sided (x + h, x + 2h) towards the wider side,
    or a shorter central step when that is longer."""
    h = np.abs(h)
    one_sided = np.zeros(h.size, dtype=bool)
    if np.all(np.isneginf(lower) & np.isposinf(upper)):
        return h, one_sided
    adjusted = h.copy()
    below, above = x0 - lower, upper - x0
    central = (below >= h) & (above >= h)
    up = (above >= below) & ~central
    adjusted[up] = np.minimum(h[up], 0.5 * above[up])
    one_sided[up] = True
    down = (above < below) & ~central
    adjusted[down] = -np.minimum(h[down], 0.5 * below[down])
    one_sided[down] = True
    shortest = np.minimum(above, below)
    short_central = ~central & (np.abs(adjusted) <= shortest)
    adjusted[short_central] = shortest[short_central]
    one_sided[short_central] = False
    return adjusted, one_sided
