"""Numbers survive the round trip: costs, gradients and residuals against known values."""

from __future__ import annotations

import subprocess
import threading
from typing import Callable, List

import numpy as np
import pytest
from scipy.optimize import least_squares, minimize, rosen, rosen_der

import pybridge
from pybridge import Capability


def test_cost_and_gradient_of_the_cpp_rosenbrock_match_scipy(bundled: Callable) -> None:
    rng = np.random.default_rng(7)
    with pybridge.Simulator([bundled("pybridge-rosenbrock")], n_params=6) as sim:
        assert sim.n_params == 6 and sim.capabilities == Capability.GRADIENT
        for _ in range(50):
            x = rng.uniform(-2, 2, 6)
            assert sim(x) == pytest.approx(rosen(x), rel=1e-14)
            cost, gradient = sim.value_and_grad(x)
            assert cost == pytest.approx(rosen(x), rel=1e-14)
            np.testing.assert_allclose(gradient, rosen_der(x), rtol=1e-13)
        assert sim.evaluations == 100
    assert sim.returncode == 0  # the C++ loop ended cleanly on close()


def test_gradients_are_not_overwritten_by_the_next_evaluation(bundled: Callable) -> None:
    with pybridge.Simulator([bundled("pybridge-rosenbrock")], n_params=3) as sim:
        _, first = sim.value_and_grad(np.zeros(3))
        saved = first.copy()
        sim.value_and_grad(np.ones(3) * 2)
        np.testing.assert_array_equal(first, saved)


def test_minimize_with_jac_converges_to_the_known_optimum(bundled: Callable) -> None:
    with pybridge.Simulator([bundled("pybridge-rosenbrock")], n_params=5) as sim:
        result = minimize(sim.value_and_grad, np.full(5, -0.5), jac=True, method="L-BFGS-B", tol=1e-12)
    assert result.success
    np.testing.assert_allclose(result.x, np.ones(5), atol=1e-5)


def test_nelder_mead_on_the_cost_alone(bundled: Callable) -> None:
    with pybridge.Simulator([bundled("pybridge-rosenbrock")], n_params=2) as sim:
        result = minimize(sim, [-1.2, 1.0], method="Nelder-Mead", options={"xatol": 1e-8, "fatol": 1e-12})
        assert result.nfev == sim.evaluations
    np.testing.assert_allclose(result.x, [1.0, 1.0], atol=1e-6)


def decay_residuals(p: np.ndarray) -> np.ndarray:
    t = 0.1 * np.arange(40)
    return p[0] * np.exp(-p[1] * t) + p[2] - (2.5 * np.exp(-1.3 * t) + 0.5)


def test_residuals_match_the_model_and_least_squares_recovers_it(bundled: Callable) -> None:
    with pybridge.Simulator([bundled("pybridge-decay")]) as sim:
        assert (sim.n_params, sim.n_residuals) == (3, 40)
        p = np.array([1.0, 0.7, 0.1])
        np.testing.assert_allclose(sim.residuals(p), decay_residuals(p), rtol=1e-14, atol=1e-15)
        assert sim(p) == pytest.approx(0.5 * np.sum(decay_residuals(p) ** 2), rel=1e-14)
        fit = least_squares(sim.residuals, [1.0, 1.0, 0.0], xtol=1e-14, ftol=1e-14, gtol=1e-14)
    np.testing.assert_allclose(fit.x, [2.5, 1.3, 0.5], rtol=1e-8)


def heat_readings(bundled: Callable, theta: List[float]) -> np.ndarray:
    out = subprocess.run([bundled("pybridge-heat"), "--synthesize", *map(str, theta)], capture_output=True,
                         text=True, check=True).stdout  # fmt: skip
    return np.array(out.split(), dtype=float)


@pytest.mark.parametrize("program", ["pybridge-heat", "pybridge-heat-c"])
def test_heat_simulator_in_cpp_and_c_gives_model_minus_measurement(bundled: Callable, tmp_path, program: str) -> None:
    measured = heat_readings(bundled, [0.4, 1.5, 8.0])
    data = tmp_path / "m.txt"
    np.savetxt(data, measured)
    theta = [0.3, 1.0, 5.0]
    with pybridge.Simulator([bundled(program), "--measurements", data]) as sim:
        np.testing.assert_allclose(sim.residuals(theta), heat_readings(bundled, theta) - measured, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("program", ["pybridge-heat", "pybridge-heat-c"])
def test_demo_recovers_the_heat_coefficients(bundled: Callable, program: str) -> None:
    from pybridge.cli import demo

    lines: List[str] = []
    exact = demo.calibrate(bundled(program), noise=0.0, report=lines.append)
    np.testing.assert_allclose(exact.recovered, demo.TRUE_COEFFICIENTS, rtol=1e-6)
    assert any("alpha" in line for line in lines)
    noisy = demo.calibrate(bundled(program), noise=0.01, seed=3, report=lambda _: None)
    # 1 % noise moves the weakly identifiable cooling rate h by a few percent; the start is 3x off.
    np.testing.assert_allclose(noisy.recovered, demo.TRUE_COEFFICIENTS, rtol=0.1)
    assert not np.allclose(noisy.recovered, demo.TRUE_COEFFICIENTS, rtol=1e-6)  # noise did matter


def test_python_simulator_over_the_same_protocol(python_simulator: Callable) -> None:
    command = python_simulator(
        """
        def sphere(x):
            return float(np.sum((x - 1.0) ** 2)), 2.0 * (x - 1.0)
        pybridge.serve(sphere, gradient=True)
        """
    )
    with pybridge.Simulator(command, n_params=4) as sim:
        assert sim(np.zeros(4)) == 4.0
        cost, grad = sim.value_and_grad(np.full(4, 3.0))
        assert cost == 16.0 and grad.tolist() == [4.0] * 4
        result = minimize(sim.value_and_grad, np.zeros(4), jac=True)
        np.testing.assert_allclose(result.x, np.ones(4), atol=1e-6)
    assert sim.returncode == 0  # serve() returned when the driver closed the channel


def test_python_residual_simulator(python_simulator: Callable) -> None:
    command = python_simulator(
        """
        t = np.linspace(0, 1, 5)
        pybridge.serve(lambda p: p[0] * t + p[1] - (2 * t + 1), n_params=2, n_residuals=5)
        """
    )
    with pybridge.Simulator(command) as sim:
        np.testing.assert_allclose(sim.residuals([0.0, 0.0]), -(2 * np.linspace(0, 1, 5) + 1))
        fit = least_squares(sim.residuals, [0.0, 0.0])
    np.testing.assert_allclose(fit.x, [2.0, 1.0], atol=1e-10)


def test_large_vectors_round_trip_exactly(python_simulator: Callable) -> None:
    command = python_simulator("pybridge.serve(lambda x: (float(x.sum()), x * 2.0), gradient=True)\n")
    x = np.random.default_rng(0).normal(size=200_000)
    with pybridge.Simulator(command, n_params=x.size) as sim:
        cost, grad = sim.value_and_grad(x)
    assert cost == pytest.approx(x.sum(), rel=1e-12)
    np.testing.assert_array_equal(grad, x * 2.0)


def test_every_wait_mode_gives_the_same_numbers(bundled: Callable) -> None:
    points = np.random.default_rng(5).uniform(-2, 2, (300, 4))
    results = {}
    for spin_us in (0, 5, 100):
        with pybridge.Simulator([bundled("pybridge-rosenbrock")], n_params=4, spin_us=spin_us) as sim:
            results[spin_us] = [(sim(x), *sim.value_and_grad(x)) for x in points]
    for spin_us in (5, 100):  # bit for bit
        for (c0, v0, g0), (c1, v1, g1) in zip(results[0], results[spin_us]):
            assert c0 == c1 == v0 == v1 and np.array_equal(g0, g1)
    for x, (cost, _, grad) in zip(points, results[0]):  # and right (C++ sums in another order than SciPy)
        assert cost == pytest.approx(rosen(x), rel=1e-14)
        np.testing.assert_allclose(grad, rosen_der(x), rtol=1e-13)


@pytest.mark.parametrize(
    "make_x",
    [list, lambda x: x.astype(np.float32), lambda x: np.repeat(x, 2)[::2], lambda x: x.astype(">f8"),
     lambda x: np.round(x).astype(np.int64)],
    ids=["list", "float32", "strided", "big-endian", "int64"],
)  # fmt: skip
def test_inputs_the_fast_path_declines_take_the_slow_path(bundled: Callable, make_x: Callable) -> None:
    x = np.array([0.5, -1.25, 2.0])
    given = make_x(x)
    expected = rosen(np.asarray(given, dtype=np.float64))
    with pybridge.Simulator([bundled("pybridge-rosenbrock")], n_params=3) as sim:
        assert sim(given) == expected
        assert sim.value_and_grad(given)[0] == expected
        assert sim.evaluations == 2


def test_a_blocked_wait_lets_other_python_threads_run(python_simulator: Callable) -> None:
    command = python_simulator("pybridge.serve(lambda x: time.sleep(0.5) or 1.0, n_params=1)\n")
    ticks = 0
    stop = threading.Event()

    def count() -> None:
        nonlocal ticks
        while not stop.is_set():
            ticks += 1

    with pybridge.Simulator(command) as sim:
        thread = threading.Thread(target=count)
        thread.start()
        try:
            started = ticks
            assert sim([0.0]) == 1.0
            progressed = ticks - started
        finally:
            stop.set()
            thread.join()
    # Half a second of counting; a waiter holding the GIL would allow only a few switch intervals of it.
    assert progressed > 100_000


def test_parameters_written_in_place_are_sent_without_a_copy(bundled: Callable) -> None:
    with pybridge.Simulator([bundled("pybridge-rosenbrock")], n_params=3) as sim:
        x = sim.params_view
        x[:] = [0.5, -1.0, 2.0]
        assert sim(x) == rosen(np.array([0.5, -1.0, 2.0]))
        x[1] = np.nan
        with pytest.raises(ValueError, match=r"x\[1\] = nan"):
            sim(x)


def test_result_views_alias_the_shared_region_and_say_so(bundled: Callable) -> None:
    with pybridge.Simulator([bundled("pybridge-rosenbrock")], n_params=2) as sim:
        copy = sim.value_and_grad(np.zeros(2))[1]
        view = sim.gradient_view
        assert np.array_equal(view, copy) and not view.flags.writeable
        sim.value_and_grad(np.ones(2))
        assert np.array_equal(view, [0.0, 0.0])  # the view shows the newest evaluation...
        assert np.array_equal(copy, rosen_der(np.zeros(2)))  # ...the returned copy does not change
        with pytest.raises(pybridge.CapabilityError):
            _ = sim.residuals_view


def test_fast_and_slow_paths_agree_to_the_last_bit(bundled: Callable) -> None:
    """One implementation of each rule: the residual cost, the shape and the finiteness checks."""
    rng = np.random.default_rng(7)
    with pybridge.Simulator([bundled("pybridge-decay")]) as sim:
        for _ in range(50):
            x = rng.uniform(0.5, 2.0, 3)
            fast = sim(x)  # a contiguous float64 array: the native path
            wide = np.empty(6)
            wide[::2] = x
            slow = [sim(x.tolist()), sim(wide[::2]), sim(x.astype(np.longdouble).astype(np.float64).tolist())]
            assert [np.float64(v).tobytes() for v in slow] == [np.float64(fast).tobytes()] * 3
            assert sim.residuals(x).tobytes() == sim.residuals(x.tolist()).tobytes() == sim.residuals(wide[::2]).tobytes()
        for bad in ([1.0, np.nan, 1.0], np.array([1.0, np.inf, 1.0]), np.array([1.0, np.inf, 1.0])[::-1]):
            with pytest.raises(ValueError, match="must be finite"):
                sim(bad)
        for bad in ([1.0, 2.0], np.ones(4)):
            with pytest.raises(ValueError, match="expected 3 parameters"):
                sim(bad)
