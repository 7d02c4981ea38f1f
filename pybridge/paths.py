"""Where the installed package keeps the shim's files (for builds that link it)."""

from __future__ import annotations

from pathlib import Path

__all__ = ["package_dir", "cmake_dir", "include_dir", "lib_dir", "pkgconfig_dir", "bundled_simulator"]


def package_dir() -> Path:
    return Path(__file__).resolve().parent


def cmake_dir() -> Path:
    """Pass as ``-Dpybridge_DIR=`` so that ``find_package(pybridge CONFIG)`` finds the shim.

    >>> (cmake_dir() / "pybridgeConfig.cmake").is_file()
    True
    """
    return lib_dir() / "cmake" / "pybridge"


def include_dir() -> Path:
    return package_dir() / "include"


def lib_dir() -> Path:
    return package_dir() / "lib"


def pkgconfig_dir() -> Path:
    """Add to ``PKG_CONFIG_PATH`` for ``pkg-config --cflags --libs pybridge``."""
    return lib_dir() / "pkgconfig"


def bundled_simulator(name: str) -> Path:
    """The path of an example simulator installed with the package (e.g. ``pybridge-heat``)."""
    path = package_dir() / "bin" / name
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} is missing: the bundled simulators are built by `pip install` "
            "(with PYBRIDGE_EXAMPLES=ON, the default)"
        )
    return path
