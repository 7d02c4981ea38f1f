"""Fortran simulators through the module `pybridge` (cpp/fortran/pybridge.f90): the Burgers example
calibrated from Python, the rest of the module's calls, and its constants against the C headers."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest
from scipy.optimize import least_squares

import pybridge
from pybridge import paths
from pybridge.errors import EvaluationFailed
from pybridge.protocol import Capability, RequestKind, Status

HERE = Path(__file__).parent
TRUE = np.array([0.08, 1.2, 0.3])  # viscosity, amplitude, mean of the initial wave


@pytest.fixture(scope="module")
def gfortran(toolchain) -> str:
    return toolchain("gfortran", "gfortran")


@pytest.fixture(scope="module")
def burgers(built_examples: Path, gfortran: str) -> Path:
    return built_examples / "burgers" / "pybridge-burgers"


@pytest.fixture(scope="module")
def compiled(gfortran: str, tmp_path_factory: pytest.TempPathFactory):
    """Compiles a program of this folder with the installed module source, linked to the installed shim."""
    out = tmp_path_factory.mktemp("fortran")
    module = out / "pybridge.o"
    subprocess.run([gfortran, "-std=f2008", "-Wall", "-Werror", "-J", str(out), "-c",
                    str(paths.include_dir() / "pybridge" / "pybridge.f90"), "-o", str(module)], check=True)  # fmt: skip

    def build(name: str) -> Path:
        exe = out / name
        subprocess.run([gfortran, "-I", str(out), str(HERE / f"{name}.f90"), str(module), f"-L{paths.lib_dir()}",
                        f"-Wl,-rpath,{paths.lib_dir()}", "-lpybridge", "-o", str(exe)], check=True)  # fmt: skip
        return exe

    return build


def test_burgers_calibrated_from_python(burgers: Path, tmp_path: Path) -> None:
    with pybridge.Simulator([burgers]) as sim:  # no observations: the residuals are the field itself
        assert (sim.n_params, sim.n_residuals) == (3, 64)
        field = sim.residuals(TRUE)
    assert 0.3 < field.mean() < 0.32 and np.ptp(field) > 1.0  # a damped, steepened wave around c = 0.3
    observations = tmp_path / "observed.txt"
    np.savetxt(observations, field)
    with pybridge.Simulator([burgers, observations]) as sim:
        fit = least_squares(sim.residuals, [0.3, 0.7, 0.0], bounds=([0.01, 0.0, -1.0], [1.0, 2.0, 1.0]),
                            xtol=1e-12, ftol=1e-12, gtol=1e-12)  # fmt: skip
    np.testing.assert_allclose(fit.x, TRUE, rtol=1e-7)


def test_burgers_reports_parameters_outside_its_range(burgers: Path) -> None:
    with pybridge.Simulator([burgers]) as sim:
        with pytest.raises(EvaluationFailed, match="nu must lie in"):
            sim.residuals([2.0, 1.0, 0.0])
        assert sim.residuals(TRUE).shape == (64,)  # the simulator kept serving


def test_the_module_constants_are_the_c_headers(compiled) -> None:
    printed = subprocess.run([str(compiled("constants"))], capture_output=True, text=True, check=True).stdout
    values = dict((name, int(value)) for name, value in (line.split() for line in printed.splitlines()))
    expected = {m.name: m.value for m in Status}
    # Iterating a Flag lists its zero member (NONE) before Python 3.11: only the capability bits.
    expected |= {f"CAP_{m.name}": m.value for m in Capability if m.value} | {f"REQUEST_{m.name}": m.value for m in RequestKind}
    assert values == expected


def test_batches_gradients_and_failures_through_the_module(compiled) -> None:
    with pybridge.Simulator([compiled("api_sim")]) as sim:
        assert sim.max_batch == 4
        xs = np.random.default_rng(1).uniform(0, 2, size=(3, 10))
        np.testing.assert_array_equal(sim.vectorized(xs), (xs**2).sum(axis=0))  # requests of 4, 4 and 2
        cost, gradient = sim.value_and_grad([1.0, 2.0, 3.0])
        assert cost == 14.0 and gradient.tolist() == [2.0, 4.0, 6.0]
        with pytest.raises(EvaluationFailed, match=f"negative x\\(1\\) on {sim.channel_name} \\(shim {pybridge.__version__}\\)"):
            sim([-1.0, 0.0, 0.0])
