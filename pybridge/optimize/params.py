"""Named physical parameters with bounds: what a user calibrates, flattened to SciPy's vector and back.

A :class:`Parameters` declaration fixes an order (the order of declaration) and a flat layout:
scalars take one slot, arrays as many as they have elements (row-major). SciPy sees the *solver
vector* ``z``: equal to the flat physical vector ``x``, except for parameters declared with
``scale=True``, which SciPy sees mapped to [0, 1] between their bounds (so that a viscosity of
1e-5 and a length of 300 weigh alike in a finite-difference step or a simplex).
"""

from __future__ import annotations

import math
from typing import Any, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from ..errors import ParameterError

__all__ = ["Parameter", "Parameters"]


class Parameter:
    """One named parameter: a scalar or an array, with bounds, a start, a unit label and optional scaling.

    >>> Parameter((0.0, 2.0), unit="m2/s").shape
    ()
    >>> Parameter([(0, 1), (0, 5)]).upper
    array([1., 5.])
    >>> Parameter(lower=np.zeros((2, 2)), upper=1.0, start=0.5).shape
    (2, 2)

    Parameters
    ----------
    bounds:
        ``(low, high)`` for a scalar, or a sequence of ``(low, high)`` pairs for an array. ``None``
        for a side means unbounded. Or SciPy's ``Bounds(lb, ub)`` (of one value: a scalar). Give
        either ``bounds`` or ``lower``/``upper``.
    lower, upper:
        The bounds as numbers or arrays (broadcast against each other and ``start``).
    start:
        Where a local method starts (default: the middle of finite bounds).
    unit:
        A label shown in tables, plots and the journal; never used in arithmetic.
    scale:
        Present this parameter to SciPy mapped to [0, 1] between its (finite) bounds.
    """

    def __init__(
        self,
        bounds: Any = None,
        *,
        lower: Any = None,
        upper: Any = None,
        start: Any = None,
        unit: str = "",
        scale: bool = False,
    ) -> None:
        if bounds is not None:
            if lower is not None or upper is not None:
                raise ParameterError("give bounds=(low, high) or lower=/upper=, not both")
            if hasattr(bounds, "lb") and hasattr(bounds, "ub"):  # scipy.optimize.Bounds
                lower, upper = np.asarray(bounds.lb, dtype=float), np.asarray(bounds.ub, dtype=float)
                if lower.size == upper.size == 1:  # SciPy keeps Bounds(0, 2) as arrays of one: a scalar
                    lower, upper = lower.reshape(()), upper.reshape(())
            else:
                lower, upper = _split_pairs(bounds)
        low = _floats(lower, -math.inf, "lower bound")
        high = _floats(upper, math.inf, "upper bound")
        begin = None if start is None else _floats(start, 0.0, "start")
        try:
            shape = np.broadcast_shapes(low.shape, high.shape, () if begin is None else begin.shape)
        except ValueError:
            raise ParameterError(
                f"the shapes of lower {low.shape}, upper {high.shape} and start "
                f"{None if begin is None else begin.shape} do not fit together"
            ) from None
        self.lower: np.ndarray = np.broadcast_to(low, shape).copy()
        self.upper: np.ndarray = np.broadcast_to(high, shape).copy()
        self.start: Optional[np.ndarray] = None if begin is None else np.broadcast_to(begin, shape).copy()
        self.unit = str(unit)
        self.scale = bool(scale)
        if self.lower.size == 0:
            raise ParameterError("the parameter has no values: give it at least one pair of bounds")
        if np.isnan(self.lower).any() or np.isnan(self.upper).any():
            raise ParameterError("a bound is NaN: use None (or ±inf) for an unbounded side")
        if self.start is not None and np.isnan(self.start).any():
            raise ParameterError("the start is NaN: give a number inside the bounds, or no start (the middle)")
        if (self.lower > self.upper).any():
            raise ParameterError(f"lower bound {_first(self.lower, self.lower > self.upper)} is above the upper bound "
                                 f"{_first(self.upper, self.lower > self.upper)}")
        if self.start is not None:
            outside = (self.start < self.lower) | (self.start > self.upper)
            if outside.any():
                raise ParameterError(f"start {_first(self.start, outside)} is outside the bounds "
                                     f"[{_first(self.lower, outside)}, {_first(self.upper, outside)}]")
        with np.errstate(over="ignore"):
            width = self.upper - self.lower
        if self.scale and not (np.isfinite(width).all() and (width > 0).all()):
            raise ParameterError("scale=True needs finite bounds with lower < upper, and a finite width")

    @property
    def shape(self) -> Tuple[int, ...]:
        return self.lower.shape

    @property
    def size(self) -> int:
        return int(self.lower.size)

    def __repr__(self) -> str:
        bounds = (f"({float(self.lower)}, {float(self.upper)})" if self.shape == ()
                  else f"lower={self.lower.tolist()}, upper={self.upper.tolist()}")
        extra = "".join([f", unit={self.unit!r}" if self.unit else "", ", scale=True" if self.scale else ""])
        return f"Parameter({bounds}{extra})"


ParameterLike = Union[Parameter, Tuple[Any, Any], Sequence[Tuple[Any, Any]]]


class Parameters(Mapping[str, Parameter]):
    """An ordered declaration of named parameters; a mapping from name to :class:`Parameter`.

    >>> p = Parameters(viscosity=Parameter((1e-6, 1e-3), unit="m2/s", scale=True),
    ...                k=[(0, 1), (0, 2)])
    >>> p.labels
    ['viscosity', 'k[0]', 'k[1]']
    >>> x = p.flatten({"viscosity": 1e-4, "k": [0.5, 1.5]})
    >>> p.unflatten(x)["k"]
    array([0.5, 1.5])
    >>> p.to_solver(x).round(4).tolist()          # viscosity seen by SciPy between 0 and 1
    [0.0991, 0.5, 1.5]

    A plain dict works wherever a declaration is expected: ``{"alpha": (0.1, 2.0), "h": (0, 5)}``.
    """

    def __init__(self, declaration: Optional[Mapping[str, ParameterLike]] = None, **named: ParameterLike) -> None:
        items = list((declaration or {}).items()) + list(named.items())
        if not items:
            raise ParameterError("declare at least one parameter, e.g. Parameters(alpha=(0.1, 2.0))")
        self._params: Dict[str, Parameter] = {}
        for name, value in items:
            if not isinstance(name, str) or not name.isidentifier():
                raise ParameterError(f"parameter names are identifiers (letters, digits, _), not {name!r}")
            if name in self._params:
                raise ParameterError(f"parameter {name!r} is declared twice")
            if isinstance(value, Parameter):
                self._params[name] = value
                continue
            try:
                self._params[name] = Parameter(value)
            except ParameterError as error:  # a Parameter does not know its name: say which one it is
                raise ParameterError(f"parameter {name!r}: {error}") from None
        self._slices: Dict[str, slice] = {}
        at = 0
        for name, parameter in self._params.items():
            self._slices[name] = slice(at, at + parameter.size)
            at += parameter.size
        self.size = at
        self.lower = np.concatenate([p.lower.ravel() for p in self._params.values()])
        self.upper = np.concatenate([p.upper.ravel() for p in self._params.values()])
        self.scaled = np.concatenate([np.full(p.size, p.scale) for p in self._params.values()])
        # The solver vector z: x for unscaled slots, (x - lower) / width for scaled ones.
        self._offset = np.where(self.scaled, self.lower, 0.0)
        self._width = np.where(self.scaled, self.upper - self.lower, 1.0)

    @classmethod
    def of(cls, declaration: "Parameters | Mapping[str, ParameterLike]") -> "Parameters":
        """``declaration`` itself, or a dict of them made into a declaration."""
        if isinstance(declaration, Parameters):
            return declaration
        if not isinstance(declaration, Mapping):
            raise ParameterError(
                f"params must be a Parameters declaration or a dict {{name: (low, high)}}, not {type(declaration).__name__}"
            )
        return cls(declaration)

    # ---- Mapping ---------------------------------------------------------------------

    def __getitem__(self, name: str) -> Parameter:
        try:
            return self._params[name]
        except KeyError:
            raise ParameterError(f"no parameter named {name!r}; declared: {', '.join(self._params)}") from None

    def __iter__(self) -> Iterator[str]:
        return iter(self._params)

    def __len__(self) -> int:
        return len(self._params)

    def __repr__(self) -> str:
        return "Parameters(" + ", ".join(f"{name}={p!r}" for name, p in self._params.items()) + ")"

    # ---- flat layout -----------------------------------------------------------------

    @property
    def labels(self) -> List[str]:
        """One label per slot of the flat vector: ``name`` for scalars, ``name[i]`` (``name[i,j]``) for arrays."""
        labels: List[str] = []
        for name, parameter in self._params.items():
            if parameter.shape == ():
                labels.append(name)
            else:
                labels += [f"{name}[{','.join(map(str, index))}]" for index in np.ndindex(*parameter.shape)]
        return labels

    @property
    def units(self) -> List[str]:
        """The unit label of each slot of the flat vector."""
        return [p.unit for p in self._params.values() for _ in range(p.size)]

    def flatten(self, values: "Mapping[str, Any] | np.typing.ArrayLike") -> np.ndarray:
        """The flat vector of ``values`` (a dict by name with every parameter, or already a flat vector)."""
        if not isinstance(values, Mapping):
            x = np.asarray(values, dtype=float)
            if x.shape != (self.size,):
                raise ParameterError(f"a flat vector of these parameters has {self.size} values, not shape {x.shape}")
            return x.copy()
        unknown = [name for name in values if name not in self._params]
        if unknown:
            raise ParameterError(f"unknown parameter(s) {', '.join(map(repr, unknown))}; declared: {', '.join(self)}")
        missing = [name for name in self._params if values.get(name) is None]  # None would become NaN
        if missing:
            raise ParameterError(f"no value given for {', '.join(map(repr, missing))}")
        x = np.empty(self.size)
        for name, parameter in self._params.items():
            value = np.asarray(values[name], dtype=float)
            if value.shape != parameter.shape:
                raise ParameterError(f"{name} has shape {parameter.shape}; the value given has shape {value.shape}")
            x[self._slices[name]] = value.ravel()
        return x

    def unflatten(self, x: "np.typing.ArrayLike") -> Dict[str, Any]:
        """The values by name: a float for a scalar parameter, an array of its shape otherwise."""
        flat = np.asarray(x, dtype=float)
        if flat.shape != (self.size,):
            raise ParameterError(f"a flat vector of these parameters has {self.size} values, not shape {flat.shape}")
        out: Dict[str, Any] = {}
        for name, parameter in self._params.items():
            part = flat[self._slices[name]]
            out[name] = float(part[0]) if parameter.shape == () else part.reshape(parameter.shape).copy()
        return out

    def start(self, x0: "Mapping[str, Any] | np.typing.ArrayLike | None" = None) -> np.ndarray:
        """The flat starting vector: ``x0`` if given (a dict may name only some parameters), else each
        parameter's ``start``, else the middle of its bounds. Checked against the bounds."""
        given = dict(x0) if isinstance(x0, Mapping) else {}
        if x0 is not None and not isinstance(x0, Mapping):
            x = self.flatten(x0)
        else:
            unknown = [name for name in given if name not in self._params]
            if unknown:
                raise ParameterError(f"unknown parameter(s) {', '.join(map(repr, unknown))} in x0; declared: {', '.join(self)}")
            x = np.empty(self.size)
            for name, parameter in self._params.items():
                if name in given:
                    value = np.asarray(given[name], dtype=float)
                    if value.shape != parameter.shape:
                        raise ParameterError(f"{name} has shape {parameter.shape}; x0 gives shape {value.shape}")
                elif parameter.start is not None:
                    value = parameter.start
                elif np.isfinite(parameter.lower).all() and np.isfinite(parameter.upper).all():
                    value = parameter.lower + 0.5 * (parameter.upper - parameter.lower)
                else:
                    raise ParameterError(f"{name} has an unbounded side and no start: give Parameter(..., start=) or x0=")
                x[self._slices[name]] = np.broadcast_to(value, parameter.shape).ravel()
        self.check_within(x, "the start")
        return x

    def check_within(self, x: np.ndarray, what: str) -> None:
        outside = ~((x >= self.lower) & (x <= self.upper))
        if outside.any():
            i = int(np.flatnonzero(outside)[0])
            raise ParameterError(
                f"{what} puts {self.labels[i]} = {float(x[i])!r} outside its bounds "
                f"[{float(self.lower[i])!r}, {float(self.upper[i])!r}]"
            )

    # ---- the solver's vector -----------------------------------------------------------

    def to_solver(self, x: "np.typing.ArrayLike") -> np.ndarray:
        """SciPy's vector ``z`` for the physical flat vector ``x``."""
        return (np.asarray(x, dtype=float) - self._offset) / self._width

    def from_solver(self, z: "np.typing.ArrayLike") -> np.ndarray:
        """The physical flat vector for SciPy's ``z``; a scaled slot stays within its bounds."""
        x = self._offset + np.asarray(z, dtype=float) * self._width
        if self.scaled.any():
            x = np.where(self.scaled, np.clip(x, self.lower, self.upper), x)
        return x

    @property
    def solver_scale(self) -> np.ndarray:
        """dx/dz per slot: multiplies a physical gradient into SciPy's."""
        return self._width

    @property
    def solver_offset(self) -> np.ndarray:
        """x at z = 0 (before clipping): ``from_solver(z)`` is ``solver_offset + z * solver_scale``."""
        return self._offset

    @property
    def solver_bounds(self) -> Tuple[np.ndarray, np.ndarray]:
        """The bounds of ``z``."""
        return self.to_solver(self.lower), self.to_solver(self.upper)

    def describe(self) -> Dict[str, Any]:
        """A JSON-able description: what makes two calibrations the same problem."""
        return {
            name: {"shape": list(p.shape), "lower": _listed(p.lower), "upper": _listed(p.upper),
                   "unit": p.unit, "scale": p.scale}
            for name, p in self._params.items()
        }  # fmt: skip


def _split_pairs(bounds: Any) -> Tuple[Any, Any]:
    """``(low, high)`` or a sequence of pairs → (lower, upper), with None kept as 'unbounded'."""
    try:
        pairs = list(bounds)
    except TypeError:
        raise ParameterError(f"bounds must be (low, high) or a list of (low, high) pairs, not {bounds!r}") from None
    if len(pairs) == 2 and all(p is None or np.ndim(p) == 0 for p in pairs):
        return pairs[0], pairs[1]
    try:
        lows = [_none_to(p[0], -math.inf) for p in pairs]
        highs = [_none_to(p[1], math.inf) for p in pairs]
    except (TypeError, IndexError):
        raise ParameterError(f"bounds must be (low, high) or a list of (low, high) pairs, not {bounds!r}") from None
    if any(len(p) != 2 for p in pairs):
        raise ParameterError(f"each bound is a (low, high) pair: {bounds!r}")
    return lows, highs


def _none_to(value: Any, default: float) -> Any:
    return default if value is None else value


def _floats(value: Any, default: float, what: str) -> np.ndarray:
    if value is None:
        return np.array(default)
    try:
        return np.asarray(value if not isinstance(value, list) else [_none_to(v, default) for v in value], dtype=float)
    except (TypeError, ValueError):
        raise ParameterError(f"the {what} must be a number or an array of numbers, not {value!r}") from None


def _first(values: np.ndarray, mask: np.ndarray) -> float:
    return float(values[mask].ravel()[0])


def _listed(values: np.ndarray) -> Any:
    """Bounds as JSON: ±inf as strings (JSON has no infinities)."""
    return [v if math.isfinite(v) else ("inf" if v > 0 else "-inf") for v in values.ravel().tolist()]
