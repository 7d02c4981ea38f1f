"""pybridge.minimize: any SciPy method on a Simulator or a Pool, with named parameters, multi-start,
checks before any evaluation, and results that carry the parameters by name."""

from __future__ import annotations

import numpy as np
import pytest
import scipy
import scipy.optimize as so

import pybridge
from pybridge import ParameterError
from pybridge.optimize import MaxEvaluations, Parameter, Parameters
from pybridge.record import Evaluation

BOX = {"a": (-2.0, 2.0), "b": (-2.0, 2.0)}
#: a + b <= 1: the Rosenbrock minimum (1, 1) is cut off; the constrained one is near (0.62, 0.38).
CUT = so.LinearConstraint([[1.0, 1.0]], -np.inf, 1.0)


@pytest.mark.parametrize(
    "method, tolerance",
    [("Nelder-Mead", 1e-3), ("L-BFGS-B", 1e-4), ("SLSQP", 2e-3),
     # SciPy 1.17's trust-constr remarks on its quasi-Newton update once the gradient stops changing at the
     # minimum; a remark to its user, not a failure.
     pytest.param("trust-constr", 1e-4, marks=pytest.mark.filterwarnings("ignore:delta_grad == 0.0:UserWarning")),
     ("Powell", 1e-3),
     pytest.param("COBYQA", 1e-3, marks=pytest.mark.skipif(
         tuple(map(int, scipy.__version__.split(".")[:2])) < (1, 14), reason="COBYQA arrived in SciPy 1.14")),
     ("differential_evolution", 1e-4), ("shgo", 1e-3), ("dual_annealing", 1e-3), ("direct", 1e-3)],
)
def test_every_kind_of_method_finds_the_rosenbrock_minimum(rosenbrock, method, tolerance) -> None:
    options = {"seed": 1} if method in ("differential_evolution", "dual_annealing") else None
    with pybridge.Simulator(rosenbrock, n_params=2) as sim:
        result = pybridge.minimize(sim, BOX, method=method, options=options)
        assert result.nfev == sim.evaluations  # every evaluation went through the bridge, and was counted
    assert result.params["a"] == pytest.approx(1.0, abs=tolerance)
    assert result.params["b"] == pytest.approx(1.0, abs=tolerance)
    assert result.x.tolist() == [result.params["a"], result.params["b"]]
    assert result.stop_rule is None and result.evaluations == result.nfev and result.replayed == 0


def test_the_result_is_the_one_scipy_reaches_on_the_same_function(rosenbrock) -> None:
    with pybridge.Simulator(rosenbrock, n_params=3) as sim:
        ours = pybridge.minimize(sim, {"x": [(-2, 2)] * 3}, method="Nelder-Mead", x0={"x": [0.0, 0.0, 0.0]})
        theirs = so.minimize(sim, np.zeros(3), method="Nelder-Mead", bounds=[(-2, 2)] * 3)
    assert ours.x.tolist() == theirs.x.tolist() and ours.fun == theirs.fun and ours.nfev == theirs.nfev
    assert ours.params["x"].shape == (3,)


@pytest.mark.parametrize("method", ["Nelder-Mead", "L-BFGS-B"])
def test_scipys_tol_means_what_it_means_to_scipy(rosenbrock, method) -> None:
    # A call copied from SciPy with tol= failed with "got an unexpected keyword argument 'tol'", and
    # minimize's tol (set into each method's own tolerances) cannot be said through options.
    with pybridge.Simulator(rosenbrock, n_params=3) as sim:
        ours = pybridge.minimize(sim, {"x": [(-2, 2)] * 3}, method=method, tol=1e-3)
        # The bundled Rosenbrock computes its gradient, which pybridge.minimize uses.
        function, jac = (sim.value_and_grad, True) if method == "L-BFGS-B" else (sim, None)
        theirs = so.minimize(function, np.zeros(3), method=method, jac=jac, bounds=[(-2, 2)] * 3, tol=1e-3)
        default = so.minimize(function, np.zeros(3), method=method, jac=jac, bounds=[(-2, 2)] * 3)
    assert ours.x.tolist() == theirs.x.tolist() and ours.fun == theirs.fun and ours.nfev == theirs.nfev
    assert theirs.nfev < default.nfev  # the tolerance took effect


def test_differential_evolutions_tol_is_its_own(rosenbrock) -> None:
    with pybridge.Simulator(rosenbrock, n_params=2) as sim:
        loose = pybridge.minimize(sim, BOX, method="differential_evolution", tol=5.0)
        same = pybridge.minimize(sim, BOX, method="differential_evolution", options={"tol": 5.0})
        default = pybridge.minimize(sim, BOX, method="differential_evolution")
    assert loose.x.tolist() == same.x.tolist() and loose.nfev == same.nfev < default.nfev


def test_scaled_parameters_and_constraints_are_restated_for_scipy(rosenbrock) -> None:
    params = Parameters(a=Parameter((-2, 2), scale=True), b=Parameter((-2, 2), scale=True))
    # a + b <= 1.5 on the physical vector: the optimum (1, 1) is cut off.
    constraint = so.LinearConstraint([[1.0, 1.0]], -np.inf, 1.5)
    nonlinear = so.NonlinearConstraint(lambda x: x[0] ** 2 + x[1] ** 2, 0, 4)
    with pybridge.Simulator(rosenbrock, n_params=2) as sim:
        result = pybridge.minimize(sim, params, method="SLSQP", constraints=[constraint, nonlinear])
    assert result.params["a"] + result.params["b"] == pytest.approx(1.5, abs=1e-6)
    assert result.fun > 0.01  # the unconstrained optimum is excluded


@pytest.mark.parametrize("method", [
    "SLSQP", "COBYLA", "trust-constr", "differential_evolution", "shgo",
    pytest.param("COBYQA", marks=pytest.mark.skipif(
        tuple(map(int, scipy.__version__.split(".")[:2])) < (1, 14), reason="COBYQA arrived in SciPy 1.14")),
])  # fmt: skip
@pytest.mark.filterwarnings("ignore:delta_grad == 0.0:UserWarning")
def test_every_method_that_takes_constraints_keeps_them(rosenbrock, method) -> None:
    # trust-constr (and differential_evolution, which polishes with it) reports the constraints'
    # Jacobians in jac: the result used to fail on it after the run.
    options = {"seed": 1} if method == "differential_evolution" else None
    with pybridge.Simulator(rosenbrock, n_params=2) as sim:
        result = pybridge.minimize(sim, BOX, method=method, constraints=[CUT], options=options)
    assert result.params["a"] + result.params["b"] <= 1.0 + 1e-6
    assert result.fun == pytest.approx(0.1456, abs=2e-3)  # the constrained minimum, not the free one (0)


def test_differential_evolution_starts_from_a_given_x0(rosenbrock) -> None:
    # SciPy puts x0 in place of the first member of the population; it was dropped without a word.
    options = {"seed": 1, "maxiter": 1, "polish": False, "popsize": 5}
    with pybridge.Simulator(rosenbrock, n_params=2) as sim:
        given = pybridge.minimize(sim, BOX, method="differential_evolution", x0={"a": 1.0, "b": 1.0}, options=options)
        none = pybridge.minimize(sim, BOX, method="differential_evolution", options=options)
    assert given.x.tolist() == [1.0, 1.0] and given.fun == 0.0  # the minimum itself, given as the start
    assert none.fun > 0.0


def test_a_method_without_bounds_runs_on_unbounded_parameters(rosenbrock) -> None:
    with pybridge.Simulator(rosenbrock, n_params=2) as sim:
        result = pybridge.minimize(sim, {"a": (None, None), "b": (None, None)}, method="BFGS", x0={"a": 0, "b": 0})
    assert result.params["a"] == pytest.approx(1.0, abs=1e-4) and result.params["b"] == pytest.approx(1.0, abs=1e-4)


def test_gradient_methods_use_the_simulators_gradient_or_parallel_differences(rosenbrock, python_simulator) -> None:
    with pybridge.Simulator(rosenbrock, n_params=2) as sim:
        with_gradient = pybridge.minimize(sim, BOX, method="L-BFGS-B")
        kinds = []
        pybridge.minimize(sim, BOX, method="L-BFGS-B", callback=lambda r: kinds.append(getattr(r, "kind", None)))
    assert set(kinds) - {None} == {"gradient"}
    cost_only = python_simulator(
        """
        pybridge.serve(lambda x: float((1 - x[0]) ** 2 + 100 * (x[1] - x[0] ** 2) ** 2), n_params=2)
        """
    )
    with pybridge.Pool(cost_only, workers=2) as pool:
        workers = set()
        result = pybridge.minimize(pool, BOX, method="L-BFGS-B", callback=lambda r: workers.add(getattr(r, "worker", None)))
    assert workers - {None} == {0, 1}  # finite differences spread over both simulators
    assert result.params["a"] == pytest.approx(with_gradient.params["a"], abs=1e-4)


def test_multistart_draws_reproducible_starts_and_keeps_every_result(rosenbrock) -> None:
    with pybridge.Pool(rosenbrock, workers=2, n_params=2) as pool:
        first = pybridge.minimize(pool, BOX, method="Nelder-Mead", n_starts=5, seed=7)
        again = pybridge.minimize(pool, BOX, method="Nelder-Mead", n_starts=5, seed=7)
        other = pybridge.minimize(pool, BOX, method="Nelder-Mead", n_starts=5, sampler="lhs", seed=7)
    assert len(first.starts) == 5 and [s.start for s in first.starts] == [0, 1, 2, 3, 4]
    assert [s.x.tolist() for s in first.starts] == [s.x.tolist() for s in again.starts]
    assert first.fun == min(s.fun for s in first.starts)
    assert len({tuple(s.x) for s in first.starts}) == 5  # different starts, different paths
    assert [s.x.tolist() for s in other.starts] != [s.x.tolist() for s in first.starts]
    assert first.params["a"] == pytest.approx(1.0, abs=1e-3)
    assert first.nfev == first.starts[[s.fun for s in first.starts].index(first.fun)].nfev
    # Printed, it reads like SciPy's result: the starts and SciPy's own result are summed up, not
    # printed again in full (five starts gave 150 lines, each start with its solver's fields twice).
    shown = repr(first)
    assert len(shown.splitlines()) < 20, shown
    assert "5 starts" in shown and "result.starts" in shown and "result.solver" in shown
    assert "params: a: " in shown


def test_multistart_runs_the_starts_concurrently_on_a_pool(python_simulator) -> None:
    # A model of 20 ms: run one after the other, no two evaluations would overlap in time.
    command = python_simulator(
        """
        def cost(x):
            time.sleep(0.02)
            return float(np.sum((x - 0.5) ** 2))
        pybridge.serve(cost, n_params=1)
        """
    )
    records = []
    with pybridge.Pool(command, workers=2) as pool:
        result = pybridge.minimize(pool, {"u": (0, 1)}, method="Nelder-Mead", n_starts=2, stop=MaxEvaluations(16),
                                   callback=records.append)
    assert result.stop_rule == "max_evaluations"
    evaluations = [r for r in records if isinstance(r, Evaluation)]
    first = [r for r in evaluations if r.start == 0]
    second = [r for r in evaluations if r.start == 1]
    overlapping = [(a, b) for a in first for b in second if a.started < b.finished and b.started < a.finished]
    assert len(overlapping) >= 4, "the two starts did not evaluate side by side"
    assert {a.worker for a, b in overlapping} | {b.worker for a, b in overlapping} == {0, 1}


def test_least_squares_for_residual_simulators(bundled, tmp_path) -> None:
    from pybridge.cli import demo

    heat = bundled("pybridge-heat")
    measured = demo.measure(heat, demo.TRUE_COEFFICIENTS, noise=0.0, seed=1)
    data = tmp_path / "m.txt"
    np.savetxt(data, measured)
    params = {"alpha": (0.05, 2.0), "h": (0.1, 5.0), "q0": (1.0, 20.0)}
    iterations = []
    with pybridge.Simulator([heat, "--measurements", data]) as sim:
        fit = pybridge.minimize(sim, params, x0=dict(zip(demo.NAMES, demo.START)),  # default: least_squares
                                callback=lambda r: iterations.append(r) if not isinstance(r, Evaluation) else None)
        nm = pybridge.minimize(sim, params, method="Nelder-Mead", stop=MaxEvaluations(30))
        with pytest.raises(ValueError, match="'least_squares' cannot keep constraints"):  # the default, by name
            pybridge.minimize(sim, params, constraints=[so.LinearConstraint([[1, 1, 0]], -np.inf, 1)])
    np.testing.assert_allclose(fit.x, demo.TRUE_COEFFICIENTS, rtol=1e-6)
    assert fit.residuals.shape == (50,) and fit.fun == pytest.approx(0.5 * fit.residuals @ fit.residuals)
    assert nm.nfev == 30  # a cost method on a residual simulator: cost = half the sum of squares
    if iterations:  # least_squares reports iterations from SciPy 1.16; their cost is the scalar one
        assert iterations[-1].cost == fit.fun


def test_mistakes_are_refused_before_any_evaluation(rosenbrock) -> None:
    with pybridge.Simulator(rosenbrock, n_params=2) as sim:
        cases = [
            (lambda: pybridge.minimize(sim, {"a": (-2, 2)}), ParameterError, "takes 2 parameter values"),
            (lambda: pybridge.minimize(sim, {"a": (2, -2), "b": (0, 1)}), ParameterError, "above the upper"),
            (lambda: pybridge.minimize(sim, BOX, x0={"c": 1.0}), ParameterError, "unknown parameter"),
            (lambda: pybridge.minimize(sim, BOX, x0={"a": 5.0}), ParameterError, "outside its bounds"),
            (lambda: pybridge.minimize(sim, BOX, method="dogleg"), ValueError, "Hessian"),
            (lambda: pybridge.minimize(sim, BOX, method="simplex"), ValueError, "unknown method"),
            (lambda: pybridge.minimize(sim, BOX, method="least_squares"), ValueError, "residuals"),
            (lambda: pybridge.minimize(sim, {"a": (-2, 2), "b": (0, None)}, method="direct"), ParameterError, "finite"),
            (lambda: pybridge.minimize(sim, BOX, method="shgo", n_starts=3), ValueError, "local methods"),
            (lambda: pybridge.minimize(sim, [(-2, 2)] * 2), ParameterError, "dict"),
            # SciPy ignores what these methods cannot keep, and the result breaks it: the simulator is
            # evaluated outside its declared bounds (BFGS on a in [2, 3] returned a = 1), constraints are
            # dropped (with a warning from minimize, silently from dual_annealing and direct).
            # Arguments of the wrong kind: obscure errors from deep inside ("slice indices must be
            # integers", "'int' object is not iterable"), or accepted and ignored (a negative tolerance).
            (lambda: pybridge.minimize(sim, BOX, n_starts=2.5), ValueError, "n_starts must be a whole number"),
            (lambda: pybridge.minimize(sim, BOX, n_starts=True), ValueError, "n_starts must be a whole number"),
            (lambda: pybridge.minimize(sim, BOX, options=[1, 2]), TypeError, "options must be a dict"),
            (lambda: pybridge.minimize(sim, BOX, callback=5), TypeError, "callback must be"),
            (lambda: pybridge.minimize(sim, BOX, stop=5), TypeError, "stop must be"),
            (lambda: pybridge.minimize(sim, BOX, stop=[MaxEvaluations(5), "soon"]), TypeError, "stop must be"),
            (lambda: pybridge.minimize(sim, BOX, progress="yes"), TypeError, "progress must be"),
            # SciPy's own process pool would have to copy the simulator into other processes, and a
            # vectorized call hands over many vectors at once: both failed with SciPy's "The map-like
            # callable must be of the form f(func, iterable)", which hid the cause.
            (lambda: pybridge.minimize(sim, BOX, method="differential_evolution", options={"workers": 2}),
             ValueError, r"workers=2.*pybridge.Pool"),
            (lambda: pybridge.minimize(sim, BOX, method="differential_evolution", options={"vectorized": True}),
             ValueError, "vectorized"),
            (lambda: pybridge.minimize(lambda x: x[0] ** 2, BOX), TypeError, "evaluator must be"),
            # shgo and direct take no start: a given x0 was dropped without a word.
            (lambda: pybridge.minimize(sim, BOX, method="shgo", x0={"a": 1.0}), ValueError, "x0"),
            (lambda: pybridge.minimize(sim, BOX, method="direct", x0={"a": 1.0}), ValueError, "x0"),
            (lambda: pybridge.minimize(sim, BOX, method="SLSQP", constraints=[so.Bounds([0, 0], [1, 1])]), TypeError,
             "Bounds belong to the parameters"),
            (lambda: pybridge.minimize(sim, BOX, method="SLSQP", constraints=["a + b <= 1"]), TypeError,
             "constraints must be"),
            # Resume keywords without a journal to resume were ignored: the run recomputed everything.
            (lambda: pybridge.minimize(sim, BOX, resume=True), ValueError, "resume=True needs journal="),
            (lambda: pybridge.minimize(sim, BOX, replay_tolerance=1e-6), ValueError, "replay_tolerance .*resume=True"),
            (lambda: pybridge.minimize(sim, BOX, check_command=False), ValueError, "check_command .*resume=True"),
            (lambda: pybridge.minimize(sim, BOX, replay_tolerance=-1.0), ValueError, "replay_tolerance"),
            (lambda: pybridge.minimize(sim, BOX, replay_tolerance=float("nan")), ValueError, "replay_tolerance"),
            # SciPy's tol belongs to scipy.optimize.minimize; the other methods name their tolerances.
            (lambda: pybridge.minimize(sim, BOX, tol=-1.0), ValueError, "tol must be a number > 0"),
            (lambda: pybridge.minimize(sim, BOX, method="direct", tol=0.1), ValueError,
             r"tol is scipy.optimize.minimize's.*direct's own tolerances in options"),
            (lambda: pybridge.minimize(sim, BOX, method="shgo", tol=0.1), ValueError, "shgo's own tolerances"),
            (lambda: pybridge.minimize(sim, BOX, method="differential_evolution", tol=0.1, options={"tol": 0.2}),
             ValueError, "tol given twice"),
            *[(lambda method=method: pybridge.minimize(sim, BOX, method=method), ValueError,
               rf"{method!r} cannot keep the parameters inside their bounds.*'L-BFGS-B'")
              for method in ("BFGS", "CG", "Newton-CG")],
            *[(lambda method=method: pybridge.minimize(sim, BOX, method=method, constraints=[CUT]), ValueError,
               rf"{method!r} cannot keep constraints.*'SLSQP'")
              for method in ("Nelder-Mead", "L-BFGS-B", "Powell", "TNC", "dual_annealing", "direct")],
        ]
        for call, kind, message in cases:
            with pytest.raises(kind, match=message):
                call()
        assert sim.evaluations == 0
