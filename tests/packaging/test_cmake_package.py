"""The shim as an installed package: CMake config, pkg-config, versions, the CLI."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import numpy as np
import pytest
from scipy.optimize import minimize

import pybridge
from pybridge import _native, paths

REPO = Path(__file__).resolve().parents[2]
# 0.x: the soname carries the minor version too (the C API may change between minors).
SONAME = "libpybridge.so." + ".".join(version("pybridge").split(".")[:2])


def test_versions_agree() -> None:
    pyproject = (REPO / "pyproject.toml").read_text()
    declared = re.search(r'^version = "([^"]+)"', pyproject, re.MULTILINE)
    assert declared is not None
    assert pybridge.__version__ == _native.__version__ == version("pybridge") == declared.group(1)


@pytest.mark.parametrize("flag", ["--cmakedir", "--includedir", "--libdir", "--pkgconfigdir"])
def test_cli_prints_existing_locations(flag: str, tmp_path: Path) -> None:
    out = subprocess.run([sys.executable, "-m", "pybridge", flag], capture_output=True, text=True, check=True,
                         cwd=tmp_path).stdout.strip()  # fmt: skip
    assert Path(out).is_dir()
    if flag == "--cmakedir":
        assert (Path(out) / "pybridgeConfig.cmake").is_file()
        assert Path(out) == pybridge.cmake_dir()


def test_consumer_project_finds_the_installed_package(built_examples: Path) -> None:
    cache = (built_examples / "CMakeCache.txt").read_text()
    assert re.search(rf"^pybridge_DIR:\w+={re.escape(str(pybridge.cmake_dir()))}$", cache, re.MULTILINE)
    # ...and the simulators it built load the installed shim library.
    linked = subprocess.run(["ldd", str(built_examples / "heat" / "pybridge-heat-c")], capture_output=True,
                            text=True, check=True).stdout  # fmt: skip
    assert f"{paths.lib_dir()}/{SONAME}" in linked


def test_examples_built_against_the_installed_package_run(built_examples: Path) -> None:
    rosenbrock = built_examples / "rosenbrock" / "pybridge-rosenbrock"
    with pybridge.Simulator([rosenbrock], n_params=3) as sim:
        result = minimize(sim.value_and_grad, np.zeros(3), jac=True, method="BFGS")
    np.testing.assert_allclose(result.x, np.ones(3), atol=1e-5)
    assert sim.returncode == 0


@pytest.mark.parametrize("program", ["pybridge-heat", "pybridge-heat-c"])
def test_heat_examples_built_standalone_calibrate(built_examples: Path, program: str) -> None:
    from pybridge.cli import demo

    result = demo.calibrate(built_examples / "heat" / program, noise=0.0, report=lambda _: None)
    np.testing.assert_allclose(result.recovered, demo.TRUE_COEFFICIENTS, rtol=1e-6)


def test_decay_example_built_standalone(built_examples: Path) -> None:
    from scipy.optimize import least_squares

    with pybridge.Simulator([built_examples / "decay" / "pybridge-decay"]) as sim:
        fit = least_squares(sim.residuals, [1.0, 1.0, 0.0], xtol=1e-14, ftol=1e-14, gtol=1e-14)
    np.testing.assert_allclose(fit.x, [2.5, 1.3, 0.5], rtol=1e-8)


def test_pkg_config_build_of_a_c_simulator(tmp_path: Path) -> None:
    """A Makefile-style build: cc $(pkg-config --cflags --libs pybridge)."""
    env = dict(os.environ, PKG_CONFIG_PATH=str(paths.pkgconfig_dir()))
    flags = subprocess.run(["pkg-config", "--cflags", "--libs", "pybridge"], env=env, capture_output=True,
                           text=True, check=True).stdout.split()  # fmt: skip
    heat = REPO / "examples" / "heat"
    exe = tmp_path / "heat-c"
    subprocess.run(["cc", "-std=c99", "-O2", str(heat / "heat_sim.c"), str(heat / "heat_model.c"), "-o", str(exe),
                    *flags, "-lm"], check=True)  # fmt: skip
    from pybridge.cli import demo

    result = demo.calibrate(exe, noise=0.0, report=lambda _: None)
    np.testing.assert_allclose(result.recovered, demo.TRUE_COEFFICIENTS, rtol=1e-6)


@pytest.fixture(scope="module")
def prefix_install(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The repository built with plain CMake (no pip) and installed to a prefix, as for a system-wide
    install: the route that keeps simulators independent of any Python environment."""
    build, prefix = tmp_path_factory.mktemp("plain-build"), tmp_path_factory.mktemp("prefix")
    steps = [
        ["cmake", "-S", str(REPO), "-B", str(build), "-DCMAKE_BUILD_TYPE=Release", "-DPYBRIDGE_EXAMPLES=OFF",
         f"-DCMAKE_INSTALL_PREFIX={prefix}"],
        ["cmake", "--build", str(build), "--parallel", "2"],
        ["cmake", "--install", str(build)],
    ]  # fmt: skip
    for step in steps:
        result = subprocess.run(step, capture_output=True, text=True)
        assert result.returncode == 0, result.stdout + result.stderr
    assert not list(build.glob("_native*"))  # no Python module outside a wheel build
    return prefix


def test_plain_cmake_install_of_the_repository(prefix_install: Path) -> None:
    assert list(prefix_install.glob("lib*/cmake/pybridge/pybridgeConfig.cmake"))
    assert (prefix_install / "include" / "pybridge" / "pybridge.h").is_file()
    assert (prefix_install / "include" / "pybridge" / "pybridge.f90").is_file()
    assert list(prefix_install.glob(f"lib*/{SONAME}")) and list(prefix_install.glob("lib*/libpybridge.a"))
    assert {p.name for p in prefix_install.glob("lib*/pkgconfig/*.pc")} == {"pybridge.pc", "pybridge-static.pc"}


def build_consumer(prefix: Path, build: Path, static: bool) -> Path:
    consumer = REPO / "tests" / "packaging" / "consumers" / "find_package"
    for step in (["cmake", "-S", str(consumer), "-B", str(build), "-DCONSUMER_LANG=C", f"-DCMAKE_PREFIX_PATH={prefix}",
                  f"-DSTATIC={'ON' if static else 'OFF'}"], ["cmake", "--build", str(build)]):  # fmt: skip
        result = subprocess.run(step, capture_output=True, text=True)
        assert result.returncode == 0, result.stdout + result.stderr
    return build / "consumer_sim"


def test_a_simulator_linked_to_a_prefix_install_works_with_this_driver(prefix_install: Path, tmp_path: Path) -> None:
    """The driver (this wheel's shim) and the simulator's shim (the prefix's) are two installs of the same
    protocol version: they work together whatever their locations."""
    exe = build_consumer(prefix_install, tmp_path / "build", static=False)
    linked = subprocess.run(["ldd", str(exe)], capture_output=True, text=True, check=True).stdout
    assert str(prefix_install) in linked and str(paths.lib_dir()) not in linked
    with pybridge.Simulator([exe]) as sim:
        assert sim([1.0, 2.0, 3.0]) == 14.0


def test_a_statically_linked_simulator_outlives_the_install_it_was_built_against(
    prefix_install: Path, tmp_path: Path
) -> None:
    """Rebuilding, moving or deleting the environment a simulator was built against must not break it:
    with the static shim there is nothing to find at run time."""
    prefix = tmp_path / "prefix"
    shutil.copytree(prefix_install, prefix, symlinks=True)
    exe = build_consumer(prefix, tmp_path / "build", static=True)
    shutil.rmtree(prefix)  # the environment is gone
    assert "libpybridge" not in subprocess.run(["ldd", str(exe)], capture_output=True, text=True).stdout
    with pybridge.Simulator([exe]) as sim:
        assert sim([1.0, 2.0, 3.0]) == 14.0


def test_a_driver_written_in_c_runs_a_simulator(built_examples: Path, bundled) -> None:
    """examples/c_driver: the shim's C driver API minimises the Rosenbrock simulator without Python."""
    result = subprocess.run([str(built_examples / "c_driver" / "pybridge-c-driver"), str(bundled("pybridge-rosenbrock"))],
                            capture_output=True, text=True, timeout=60)  # fmt: skip
    assert result.returncode == 0, result.stderr
    found = re.match(r"minimum (\S+) at x = \[(.*)\] after (\d+) evaluations", result.stdout)
    assert found is not None, result.stdout
    # Coordinate descent with a shrinking step walks down Rosenbrock's valley to (1, 1, 1, 1).
    assert float(found.group(1)) < 1e-6 and int(found.group(3)) > 1000
    np.testing.assert_allclose([float(v) for v in found.group(2).split(",")], np.ones(4), atol=1e-3)
