"""`pybridge plot`, `history` and `monitor`: what a user sees of a journal, live and afterwards."""

from __future__ import annotations

import csv
import io
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Callable, List

import numpy as np
import pytest

import pybridge
from pybridge.optimize import MaxEvaluations, Parameter, Parameters
from pybridge.paths import bundled_simulator
from pybridge.record import read_journal

ROSENBROCK = [str(bundled_simulator("pybridge-rosenbrock"))]


@pytest.fixture
def journal(tmp_path):
    path = tmp_path / "calibration.db"
    params = Parameters(a=Parameter((-2, 2), unit="m"), k=Parameter([(-2, 2), (-2, 2)], unit="s"))
    with pybridge.Simulator(ROSENBROCK, n_params=3) as sim:
        pybridge.minimize(sim, params, method="Nelder-Mead", journal=path, stop=MaxEvaluations(120))
    return path


def wait_for(condition: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)  # polling what another thread prints: nothing to wake us sooner


def _pybridge(*args, **kwargs):
    return subprocess.run([sys.executable, "-m", "pybridge", *map(str, args)], capture_output=True, text=True,
                          timeout=120, **kwargs)  # fmt: skip


def test_plot_writes_a_png_with_axes_and_data(journal, tmp_path) -> None:
    pytest.importorskip("matplotlib")
    import warnings

    with warnings.catch_warnings():
        # Older matplotlib (Python 3.9's) calls pyparsing names that newer pyparsing deprecates.
        warnings.simplefilter("ignore", DeprecationWarning)
        from matplotlib.image import imread

        from pybridge.record.plot import draw

        draw(read_journal(journal))  # the first figure imports the rest of matplotlib

    done = _pybridge("plot", journal, "-o", tmp_path / "out.png")
    assert done.returncode == 0, done.stderr
    png = tmp_path / "out.png"
    assert done.stdout.strip() == str(png)
    pixels = imread(png)
    assert pixels.shape[0] > 400 and pixels.shape[1] > 400
    assert len(np.unique(pixels.reshape(-1, pixels.shape[-1]), axis=0)) > 20  # drawn, not blank

    figure = draw(read_journal(journal))
    axes = figure.get_axes()
    assert [ax.get_ylabel() for ax in axes] == ["cost", "a [m]", "k[0] [s]", "k[1] [s]"]
    costs = read_journal(journal).cost
    assert axes[0].lines[0].get_ydata().tolist() == costs.tolist()
    assert axes[0].lines[1].get_ydata()[-1] == costs.min() and axes[0].get_yscale() == "log"


def test_a_plot_of_millions_of_evaluations_draws_a_sample_and_the_exact_best(journal) -> None:
    # A days-long run's journal: drawing every evaluation as a marker took 9 s of matplotlib per 10^6
    # evaluations (and grows with them), for a picture no different from a sample's.
    pytest.importorskip("matplotlib")
    from pybridge.record.plot import MAX_POINTS, draw

    small = read_journal(journal)
    n = 3 * MAX_POINTS + 7
    rng = np.random.default_rng(3)
    cost = rng.uniform(1.0, 2.0, n)
    cost[12345] = 0.5  # the best, off the sampling grid
    x = rng.uniform(-2, 2, (n, 3))
    big = small._replace(ids=np.arange(1, n + 1), run=np.ones(n, int), start=np.zeros(n, int), status=["ok"] * n,
                         cost=cost, started=np.zeros(n), finished=np.ones(n), worker=np.zeros(n, int), x=x, total=n)
    axes = draw(big).get_axes()
    markers, best = axes[0].lines[0], axes[0].lines[1]
    assert len(markers.get_ydata()) <= MAX_POINTS + 1 and 0.5 in markers.get_ydata().tolist()
    assert best.get_ydata().min() == 0.5 and best.get_xdata()[-1] == n  # the best so far, exact to the end
    assert all(len(ax.lines[0].get_ydata()) <= MAX_POINTS + 1 for ax in axes[1:])
    assert x[12345, 0] in axes[1].lines[0].get_ydata().tolist()
    assert f"{n} evaluations" in axes[0].get_title() and "every 4th drawn" in axes[0].get_title()


def test_history_prints_and_exports_exact_csv(journal, tmp_path) -> None:
    table = _pybridge("history", journal, "--best", 3)
    assert table.returncode == 0, table.stderr
    assert "120 evaluations; parameters: a, k[0], k[1]" in table.stdout
    assert "stopped: maximum of 120 evaluations reached" in table.stdout
    out = tmp_path / "all.csv"
    assert _pybridge("history", journal, "--csv", out).returncode == 0
    with open(out) as handle:
        rows = list(csv.DictReader(handle))
    contents = read_journal(journal)
    assert len(rows) == 120
    assert [float(row["cost"]) for row in rows] == contents.cost.tolist()  # every digit kept
    assert [float(row["request_latency_s"]) for row in rows] == contents.request_latency.tolist()
    assert all(float(row["reply_latency_s"]) >= 0 for row in rows)
    assert [float(row["k[1]"]) for row in rows] == contents.x[:, 2].tolist()


@pytest.mark.parametrize("option", ["--last", "--best"])
def test_a_count_below_one_is_refused_by_name(journal, option) -> None:
    # `history --last -5` printed an empty table, as if the journal held nothing.
    for value in ("-5", "0"):
        run = _pybridge("history", journal, option, value)
        assert run.returncode == 2 and f"{option}: give a whole number of at least 1, not {value}" in run.stderr


@pytest.mark.parametrize("args", [("history",), ("history", "--csv", "-"), ("monitor", "--once")])
def test_output_into_a_closed_pipe_ends_quietly(journal, args) -> None:
    # `pybridge history run.db | head`: the reader goes away first. The read end is closed before the
    # command starts, so that its first write meets the closed pipe every time.
    read, write = os.pipe()
    os.close(read)
    try:
        done = subprocess.run([sys.executable, "-m", "pybridge", args[0], str(journal), *args[1:]], stdout=write,
                              stderr=subprocess.PIPE, text=True, timeout=120)  # fmt: skip
    finally:
        os.close(write)
    assert "Traceback" not in done.stderr and done.stderr == ""
    assert done.returncode == 128 + signal.SIGPIPE  # what a shell pipeline expects of a command cut short


@pytest.mark.parametrize("args", [("plot", "-o"), ("history", "--csv")])
def test_an_output_that_cannot_be_written_is_a_message(journal, tmp_path, args) -> None:
    # A journal in a folder its reader cannot write (plot puts the PNG beside it by default), or a typo.
    target = tmp_path / "missing" / "out"
    done = _pybridge(args[0], journal, args[1], target)
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    assert f"cannot write {target}" in done.stderr and "No such file or directory" in done.stderr


def test_the_commands_refuse_what_is_not_a_journal(tmp_path) -> None:
    other = tmp_path / "notes.txt"
    other.write_text("hello")
    for command in ("plot", "history", "monitor"):
        done = _pybridge(command, other, *(["--once"] if command == "monitor" else []))
        assert done.returncode == 1 and "not a pybridge journal" in done.stderr and "Traceback" not in done.stderr


def test_monitor_follows_a_live_calibration_without_disturbing_it(tmp_path, python_simulator) -> None:
    path = tmp_path / "live.db"
    simulator = python_simulator(
        """
        def cost(x):
            time.sleep(0.005)  # the model's own time: the run lasts about 2 s
            return float(np.sum((x - 0.3) ** 2))
        pybridge.serve(cost, n_params=2)
        """
    )
    script = tmp_path / "calibrate.py"
    script.write_text(textwrap.dedent(f"""
        import pybridge
        from pybridge.optimize import MaxEvaluations
        with pybridge.Simulator({simulator!r}) as sim:
            result = pybridge.minimize(sim, {{"a": (-1, 1), "b": (-1, 1)}}, method="Nelder-Mead",
                                       options={{"xatol": 0, "fatol": 0}}, journal={str(path)!r},
                                       stop=MaxEvaluations(300))
        print(result.nfev, repr(result.fun))
    """))
    monitor = subprocess.Popen([sys.executable, "-m", "pybridge", "monitor", str(path), "--interval", "0.1"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert monitor.stdout is not None
        assert monitor.stdout.readline().startswith("waiting for the journal")  # started before the run
        calibration = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
        output, errors = monitor.communicate(timeout=60)
    finally:
        if monitor.poll() is None:
            monitor.kill()
            monitor.communicate()
    assert calibration.returncode == 0, calibration.stderr
    nfev, fun = calibration.stdout.split()
    assert monitor.returncode == 0, errors
    blocks = [block for block in output.split("\n\n") if block.strip()]
    counts = [int(block.split("evaluations: ")[1].split()[0]) for block in blocks if "evaluations: " in block]
    live = [block for block in blocks if " - running" in block]
    assert len(live) >= 3 and counts == sorted(counts)
    assert len({count for count in counts if 0 < count < 300}) >= 2  # figures seen growing while it ran
    assert "finished: stopped: maximum of 300 evaluations reached" in blocks[-1] and counts[-1] == int(nfev) == 300
    assert f"best cost: {float(fun):.6g}" in blocks[-1]
    assert len(read_journal(path).ids) == 300  # nothing lost to the reader


def test_monitor_once_on_a_finished_journal(journal) -> None:
    from pybridge.cli.monitor import run
    from pybridge.record.progress import format_duration

    out = io.StringIO()
    assert run(str(journal), once=True, out=out) == 0
    text = out.getvalue()
    assert "finished: stopped: maximum of 120 evaluations reached" in text and "120 in this run" in text
    # The bridge's share of the latency, apart from the model's: the journal's latency columns.
    contents = read_journal(journal)
    request, reply = (format_duration(float(np.median(column)))
                      for column in (contents.request_latency, contents.reply_latency))  # fmt: skip
    assert f"the bridge's share of it: request {request}, reply {reply} (medians)" in text, text


def test_the_monitor_shows_a_fast_models_latency_as_it_is(journal) -> None:
    # The monitor rounded to whole microseconds: the bundled Rosenbrock's ~0.5 us read "median 0 us",
    # while the progress bar, with its own formatter, showed "0.5us". The fixture's times are set here:
    # on a busy host its evaluations take tens of microseconds.
    import re
    import sqlite3

    from pybridge.cli.monitor import run

    with sqlite3.connect(journal) as connection:
        connection.execute("UPDATE evaluations SET finished = started + 4.77e-7")
    connection.close()
    out = io.StringIO()
    run(str(journal), once=True, out=out)
    shown = re.search(r"latency: median ([\d.]+) ?(us|ms|s),", out.getvalue())
    assert shown, out.getvalue()
    value = float(shown.group(1)) * {"us": 1e-6, "ms": 1e-3, "s": 1.0}[shown.group(2)]
    assert value == pytest.approx(4.77e-7, rel=0.02), out.getvalue()


@pytest.mark.parametrize("seconds, text", [
    (4.77e-7, "0.48us"), (9.996e-6, "10.0us"), (1.5e-5, "15.0us"), (9.996e-4, "1.00ms"), (2.5e-3, "2.50ms"),
    (0.12345, "123ms"), (3.0, "3.00s"), (4000.0, "4000s"), (float("nan"), "-"),
])  # fmt: skip
def test_one_way_to_write_a_duration(seconds, text) -> None:
    from pybridge.record.progress import format_duration

    assert format_duration(seconds) == text


def test_monitor_of_a_journal_without_latencies_says_nothing_of_them(tmp_path) -> None:
    from pybridge.cli.monitor import run

    path = tmp_path / "old.db"
    shutil.copy(Path(__file__).parent / "data" / "journal-v1.db", path)
    out = io.StringIO()
    assert run(str(path), once=True, out=out) == 0
    assert "latency: median" in out.getvalue() and "the bridge's share" not in out.getvalue()


def test_a_monitor_refresh_reads_only_what_was_added(journal, monkeypatch) -> None:
    # A calibration of days grows its journal to millions of rows; a monitor that read all of them on
    # every refresh (5.8 s per read at 10^6 evaluations) took a core from the run it watches.
    import threading

    from pybridge.cli import monitor
    from pybridge.record import Evaluation, Journal

    rows_read: List[int] = []
    real = monitor.read_journal

    def counting(*args, **kwargs):
        contents = real(*args, **kwargs)
        rows_read.append(len(contents.ids))
        return contents

    monkeypatch.setattr(monitor, "read_journal", counting)
    before = read_journal(journal)
    writer = Journal(journal, before.problem, before.labels, resume=True)
    writer.begin_run("nelder-mead", {}, resumed=True)
    out = io.StringIO()
    watching = threading.Thread(target=monitor.run, args=(str(journal),), kwargs={"interval": 0.02, "out": out})
    watching.start()
    try:
        for batch in range(3):
            seen = f"evaluations: {120 + 256 * batch} in the journal"
            wait_for(lambda seen=seen: seen in out.getvalue(), timeout=30)
            now = time.time()
            writer.add_all([Evaluation(k, 0, "cost", np.full(3, 0.5), -batch - k / 1000, None, None, "ok", None,
                                       now, now + 0.001, 0) for k in range(256)])  # fmt: skip  # 256: one commit
        wait_for(lambda: f"evaluations: {120 + 3 * 256} in the journal, {3 * 256} in this run" in out.getvalue(),
                 timeout=30)  # fmt: skip
        writer.end_run("done", -2.255)
    finally:
        writer.close()
        watching.join(timeout=30)
    assert not watching.is_alive()
    last = out.getvalue().strip().split("\n\n")[-1]
    assert "finished: done" in last and "best cost: -2.255 at evaluation 888" in last
    assert len(rows_read) >= 5 and sum(rows_read) == 120 + 3 * 256  # each row read once, however many refreshes


def test_a_monitor_starts_over_when_the_journal_is_replaced(journal, tmp_path) -> None:
    from pybridge.cli.monitor import Figures

    figures = Figures()
    figures.add(read_journal(journal))
    assert not figures.replaced_by(read_journal(journal, since=figures.contents))
    replaced = tmp_path / "other.db"
    with pybridge.Simulator(ROSENBROCK, n_params=3) as sim:
        pybridge.minimize(sim, {"a": (-2, 2), "k": [(-2, 2), (-2, 2)]}, method="Nelder-Mead", journal=replaced,
                          stop=MaxEvaluations(150))  # fmt: skip
    replaced.replace(journal)  # deleted and written again under the same name while the monitor watched
    assert figures.replaced_by(read_journal(journal, since=figures.contents))
