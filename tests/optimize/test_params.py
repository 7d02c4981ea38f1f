"""Named parameters: flattening, scaling, and every invalid declaration refused before any evaluation."""

from __future__ import annotations

import re

import numpy as np
import pytest
import scipy.optimize as so

from pybridge import ParameterError
from pybridge.optimize import Parameter, Parameters


def test_scalars_and_arrays_flatten_in_declaration_order_and_back() -> None:
    p = Parameters(alpha=(0.1, 2.0), k=Parameter(lower=[0, 0, 0], upper=[1, 2, 3]), grid=Parameter(lower=np.zeros((2, 2)), upper=1))
    assert p.size == 1 + 3 + 4
    assert p.labels == ["alpha", "k[0]", "k[1]", "k[2]", "grid[0,0]", "grid[0,1]", "grid[1,0]", "grid[1,1]"]
    values = {"alpha": 0.5, "k": [0.1, 0.2, 0.3], "grid": [[0.1, 0.2], [0.3, 0.4]]}
    x = p.flatten(values)
    assert x.tolist() == [0.5, 0.1, 0.2, 0.3, 0.1, 0.2, 0.3, 0.4]
    back = p.unflatten(x)
    assert back["alpha"] == 0.5 and isinstance(back["alpha"], float)
    assert back["grid"].shape == (2, 2) and back["grid"][1, 0] == 0.3
    assert p.upper.tolist() == [2.0, 1, 2, 3, 1, 1, 1, 1]


def test_bounds_as_dict_pairs_list_of_pairs_or_arrays_agree() -> None:
    a = Parameters({"k": [(0, 1), (None, 5)]})
    b = Parameters(k=Parameter(lower=[0, -np.inf], upper=[1, 5]))
    assert a.lower.tolist() == b.lower.tolist() and a.upper.tolist() == b.upper.tolist()
    assert a.lower[1] == -np.inf
    # SciPy's own Bounds, for a parameter or in a plain dict (it was refused: "bounds must be (low, high)").
    c = Parameters({"k": so.Bounds([0, -np.inf], [1, 5])})
    d = Parameters(k=Parameter(so.Bounds([0, -np.inf], [1, 5]), unit="m"))
    assert c.lower.tolist() == d.lower.tolist() == a.lower.tolist() and c.upper.tolist() == a.upper.tolist()
    assert Parameters(a=so.Bounds(0, 2)).labels == ["a"]  # a scalar


def test_scaled_parameters_reach_scipy_between_zero_and_one() -> None:
    p = Parameters(nu=Parameter((1e-6, 1e-3), scale=True, unit="m2/s"), L=(0, 300))
    x = np.array([1e-4, 120.0])
    z = p.to_solver(x)
    assert 0 < z[0] < 1 and z[1] == 120.0
    np.testing.assert_allclose(p.from_solver(z), x, rtol=1e-15)
    assert p.solver_bounds[0].tolist() == [0.0, 0.0] and p.solver_bounds[1].tolist() == [1.0, 300.0]
    assert p.solver_scale[0] == pytest.approx(1e-3 - 1e-6) and p.units == ["m2/s", ""]


def test_default_start_is_the_middle_and_x0_may_name_some_parameters() -> None:
    p = Parameters(a=(0, 2), b=Parameter((0, 10), start=1.0))
    assert p.start().tolist() == [1.0, 1.0]
    assert p.start({"a": 0.5}).tolist() == [0.5, 1.0]


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: Parameters(a=(2.0, 1.0)), "above the upper bound"),
        (lambda: Parameters(a=(0, 1)).start({"a": 3.0}), "a = 3.0 outside its bounds [0.0, 1.0]"),
        (lambda: Parameters(a=(0, 1)).start({"b": 0.5}), "unknown parameter"),
        (lambda: Parameters(a=(0, 1)).flatten({"a": 0.5, "c": 1}), "unknown parameter"),
        (lambda: Parameters(a=(0, 1)).flatten({}), "no value given for 'a'"),
        (lambda: Parameters(a=(0, 1)).flatten({"a": None}), "no value given for 'a'"),  # was NaN
        (lambda: Parameters(k=[(0, 1), (0, 1)]).flatten({"k": [1, 2, 3]}), "has shape (2,)"),
        (lambda: Parameter(lower=[0, 0], upper=[1, 1, 1]), "do not fit together"),
        (lambda: Parameters(a=Parameter((0, None), scale=True)), "finite bounds"),
        (lambda: Parameters(a=(0, float("nan"))), "NaN"),
        (lambda: Parameters(**{"not a name": (0, 1)}), "identifiers"),
        (lambda: Parameters(), "at least one"),
        (lambda: Parameters(a=(None, None)).start(), "no start"),
        (lambda: Parameters(a="wide"), "bounds must be"),
        # Accepted before, failing later or silently: a NaN start reached the simulator at the first
        # evaluation, an empty array declared nothing, and a width that overflows scaled every value to NaN.
        (lambda: Parameters(a=Parameter((0, 1), start=float("nan"))), "start is NaN"),
        (lambda: Parameters(a=Parameter(lower=[], upper=[])), "no values"),
        (lambda: Parameters(a=Parameter((-1e308, 1e308), scale=True)), "finite width"),
        # A start outside the bounds was refused only when minimize began, far from the line declaring it.
        (lambda: Parameter((0, 1), start=3.0), "start 3.0 is outside the bounds [0.0, 1.0]"),
        (lambda: Parameter([(0, 1), (0, 2)], start=[0.5, -1]), "start -1.0 is outside the bounds [0.0, 2.0]"),
    ],
)
def test_invalid_declarations_are_clear_errors(make, message) -> None:
    with pytest.raises(ParameterError, match=re.escape(message)):
        make()


@pytest.mark.parametrize(
    "declaration, message",
    [
        ({"alpha": (0.1, 2.0), "h": (5.0, 0.1)}, "parameter 'h': lower bound 5.0 is above the upper bound 0.1"),
        ({"alpha": (0.1, 2.0), "k": [(0, 1), (0, float("nan"))]}, "parameter 'k': a bound is NaN"),
        ({"alpha": (0.1, 2.0), "q": "wide"}, "parameter 'q': bounds must be"),
    ],
)
def test_a_bad_bound_in_a_dict_names_its_parameter(declaration, message) -> None:
    # Among twenty parameters of a plain dict, "lower bound 5.0 is above the upper bound 0.1" alone
    # leaves the user to search for which.
    with pytest.raises(ParameterError, match=re.escape(message)):
        Parameters(declaration)


def test_a_parameter_error_is_a_value_error_too() -> None:
    assert issubclass(ParameterError, ValueError)
