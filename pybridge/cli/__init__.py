"""The `pybridge` command (also `python -m pybridge`): one module per subcommand, imported when used."""

from __future__ import annotations

import argparse
import sys
from typing import Optional, Sequence

from .. import __version__, paths

__all__ = ["main"]

_LOCATIONS = {
    "cmakedir": (paths.cmake_dir, "directory of pybridgeConfig.cmake (pass as -Dpybridge_DIR=)"),
    "includedir": (paths.include_dir, "directory to add to the include path"),
    "libdir": (paths.lib_dir, "directory holding libpybridge"),
    "pkgconfigdir": (paths.pkgconfig_dir, "directory of pybridge.pc (add to PKG_CONFIG_PATH)"),
}


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["bench"]:  # its own parser, its own options
        from .bench import main as bench  # its own parser, its own options

        return bench(argv[1:])
    parser = argparse.ArgumentParser(
        prog="pybridge", description="Shared-memory co-simulation bridge between SciPy and external simulators."
    )
    parser.add_argument("--version", action="version", version=f"pybridge {__version__}")
    for flag, (_, help_text) in _LOCATIONS.items():
        parser.add_argument(f"--{flag}", action="store_true", help=f"print the {help_text}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    demo = commands.add_parser("demo", help="calibrate the bundled heat-conduction simulator and print the result")
    demo.add_argument("--simulator", help="a heat simulator built from examples/heat (default: the bundled one)")
    demo.add_argument("--noise", type=float, default=0.01, help="measurement noise, relative to the peak reading")
    demo.add_argument("--seed", type=int, default=1, help="seed of the measurement noise")

    commands.add_parser("bench", help="measure pybridge against every alternative (see `pybridge bench --help`)")
    clean = commands.add_parser("clean", help="remove channels left in /dev/shm by drivers that died")
    clean.add_argument("--dry-run", action="store_true", help="only list what would be removed")

    args = parser.parse_args(argv)
    for flag, (location, _) in _LOCATIONS.items():
        if getattr(args, flag):
            print(location())
            return 0
    if args.command == "demo":
        from . import demo as demo_module  # imports SciPy: only when needed

        demo_module.calibrate(args.simulator, noise=args.noise, seed=args.seed)
        return 0
    if args.command == "clean":
        from .clean import run as clean_command

        return clean_command(dry_run=args.dry_run)
    parser.print_help(sys.stderr)
    return 2
