"""The `pybridge` command (also `python -m pybridge`): one module per subcommand, imported when used."""

from __future__ import annotations

import argparse
import os
import signal
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
    try:
        return _main(argv)
    except BrokenPipeError:
        # `pybridge history run.db | head`: the reader left. End as a command cut short by SIGPIPE does,
        # quietly, after the finally blocks ran (a killed bench would leave its simulators behind); the
        # interpreter's last flush of stdout must not meet the closed pipe again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 128 + signal.SIGPIPE


def _main(argv: Optional[Sequence[str]]) -> int:
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

    plot = commands.add_parser("plot", help="draw a calibration journal (convergence, parameter traces) to PNG")
    plot.add_argument("journal", help="the journal's path (the journal= of pybridge.minimize)")
    plot.add_argument("-o", "--output", help="the PNG to write (default: the journal's name with .png)")
    monitor = commands.add_parser("monitor", help="show a running calibration's live figures (reads its journal only)")
    monitor.add_argument("journal", help="the journal's path")
    monitor.add_argument("--interval", type=float, default=1.0, help="seconds between refreshes (default 1)")
    monitor.add_argument("--once", action="store_true", help="print the figures once and exit")
    history = commands.add_parser("history", help="print what a journal holds, or export it as CSV")
    history.add_argument("journal", help="the journal's path")
    history.add_argument("--csv", metavar="FILE", help="write CSV to FILE ('-': standard output)")
    shown = history.add_mutually_exclusive_group()
    shown.add_argument("--last", type=_count, metavar="N", help="only the last N evaluations")
    shown.add_argument("--best", type=_count, metavar="N", help="only the N lowest costs")

    args = parser.parse_args(argv)
    for flag, (location, _) in _LOCATIONS.items():
        if getattr(args, flag):
            print(location())
            return 0
    if args.command == "demo":
        from . import demo as demo_module  # imports SciPy: only when needed

        demo_module.calibrate(args.simulator, noise=args.noise, seed=args.seed)
        return 0
    if args.command in ("plot", "monitor", "history"):
        return _journal_command(args)
    if args.command == "clean":
        from .clean import run as clean_command

        return clean_command(dry_run=args.dry_run)
    parser.print_help(sys.stderr)
    return 2


def _journal_command(args: argparse.Namespace) -> int:
    from ..errors import JournalError

    try:
        if args.command == "plot":
            from ..record.plot import plot_journal

            print(plot_journal(args.journal, args.output))
            return 0
        if args.command == "monitor":
            from .monitor import run as monitor

            return monitor(args.journal, interval=args.interval, once=args.once)
        from .history import run as history

        return history(args.journal, csv_path=args.csv, last=args.last, best=args.best)
    except (JournalError, ImportError) as error:
        print(f"pybridge {args.command}: {error}", file=sys.stderr)
        return 1
    except BrokenPipeError:
        raise  # the reader of our output left: main() ends quietly
    except OSError as error:  # the PNG or the CSV cannot be written there
        where = " (-o PATH writes it elsewhere)" if args.command == "plot" else ""
        print(f"pybridge {args.command}: cannot write {error.filename}: {error.strerror}{where}", file=sys.stderr)
        return 1


def _count(text: str) -> int:
    """A count of evaluations to show: 0 or less would print an empty table, as if the journal held none."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"give a whole number of at least 1, not {text}")
    return value
