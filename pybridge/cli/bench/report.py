"""How `pybridge bench` reports: the targets (ratios within one run) and the Markdown tables."""

from __future__ import annotations

from typing import Dict, Iterator, List

from ...simulator import DEFAULT_SPIN_US
from .model_time import ORACLES
from .pool import BATCH
from .transports import SIZES, all_transports


def evaluate_targets(results: dict) -> List[Dict[str, object]]:
    small, big = results["latency"]["8"], results["latency"]["1000000"]
    pybridge = small[all_transports()[0].name]["median_us"]
    rows = [
        ("n=8: pybridge / in-process numpy", pybridge / small["in-process numpy expression"]["median_us"], "<=", 0.5),
        ("n=8: Unix socket / pybridge", small["Unix socket"]["median_us"] / pybridge, ">=", 30),
        ("n=8: files + subprocess / pybridge", small["files + subprocess per call"]["median_us"] / pybridge, ">=", 1000),
        ("n=8: pybridge / C<->C spin floor", pybridge / small["C <-> C spin on shared memory"]["median_us"], "<=", 4),
        ("n=10^6: (pybridge - in-process pybind11) / 8 MB memcpy",
         (big[all_transports()[0].name]["median_us"] - big["in-process C++ via pybind11"]["median_us"])
         / results["memcpy_8mb_us"], "<=", 1.5),
    ]  # fmt: skip
    intervals: Dict[str, List[float]] = {}  # target: its 95 % interval, where one value alone would mislead
    # Not targets, but the evidence for one: the same ratio for two C processes (the physical floor of
    # one copy in and a read from another core), and for pybridge when x is written in place.
    floors = [
        ("n=10^6: (C<->C spin - in-process pybind11) / 8 MB memcpy",
         (big["C <-> C spin on shared memory"]["median_us"] - big["in-process C++ via pybind11"]["median_us"])
         / results["memcpy_8mb_us"]),
        ("n=10^6: (pybridge in place - in-process pybind11) / 8 MB memcpy",
         (big["pybridge, x written in place (no copy)"]["median_us"] - big["in-process C++ via pybind11"]["median_us"])
         / results["memcpy_8mb_us"]),
    ]  # fmt: skip
    for name, run in results["end_to_end"].items():
        rows.append((f"{name}: pybridge / in-process", run["ratio"], "<=", 1.25 if "Nelder" in name else 1.1))
    default = results["idle_cpu"][f"spin {DEFAULT_SPIN_US} us, then block"]
    rows.append(("50 ms evaluations: driver CPU (% of a core)", default["driver_percent"], "<=", 2))
    rows.append(("50 ms evaluations: simulator CPU (% of a core)", default["simulator_percent"], "<=", 2))
    model = results["model_time"]
    blocking, spinning, forecast = "pure blocking (spin_us=0)", "pure spinning (spin_us=20000)", "forecast (default)"
    for model_us in ("1000", "5000"):
        rows_at = model["model_times"][model_us]
        label = f"{int(model_us) / 1000:g} ms ±10 %"
        rows.append((f"{label}: time the bridge adds, median (µs)", rows_at[forecast]["median_us"], "<=", 10))
        for side in ("driver", "simulator"):
            rows.append((f"{label}: {side} CPU beyond pure blocking (% of a core)",
                         rows_at[forecast][f"{side}_percent"] - rows_at[blocking][f"{side}_percent"], "<=", 10))
        floors.append((f"{label}: pure spinning (100 % of a core) adds, median (µs)", rows_at[spinning]["median_us"]))
        for oracle, lead in ORACLES.items():
            floors.append((f"{label}: an oracle (told each reply's time, spins its last {lead * 100:g} %) adds, median (µs)",
                           rows_at[oracle]["median_us"]))  # fmt: skip
    rows.append(("50 ms ±10 %: driver CPU (% of a core)", model["model_times"]["50000"][forecast]["driver_percent"],
                 "<=", 2))  # fmt: skip
    for change, waits in model["abrupt"].items():
        rows.append((f"model time {change}: added over the next 5, median change, forecast / spin-then-block",
                     waits[forecast]["per_change_us"] / waits["spin-then-block (forecast=False)"]["per_change_us"],
                     "<=", 1))  # fmt: skip
    busy = model["contention"]
    # Two means of a scattering host: "no worse" holds unless the ratio's 95 % interval lies above 1.
    busy_ratio = "every core busy, 1 ms: mean round trip, forecast / pure blocking"
    rows.append((busy_ratio, busy[forecast]["mean_round_trip_us"] / busy[blocking]["mean_round_trip_us"], "<=", 1))
    intervals[busy_ratio] = model["contention_interval"]
    noise = "every core busy: pure blocking's two simulators, second / first (the noise of the row above)"
    floors.append((noise, model["contention_noise"]))
    intervals[noise] = model["contention_noise_interval"]
    for side in ("driver", "simulator"):  # spinning would show here: the forecast's guard blocks instead
        floors.append((f"every core busy: {side} CPU per evaluation, forecast - pure blocking (µs)",
                       busy[forecast][f"{side}_cpu_us"] - busy[blocking][f"{side}_cpu_us"]))
    # Evidence for the 5 ms row: what a thread finds after it was halted for 4.5 ms (then spun 300 µs).
    warm, halted = model["after_halt"]["never halted"], model["after_halt"]["halted 4.5 ms"]
    floors.append(("after 4.5 ms halted: a 32 KiB walk, halted / never halted (caches; 1 = still warm)",
                   halted["walk_us"] / warm["walk_us"]))  # fmt: skip
    floors.append(("after 4.5 ms halted in 1 ms naps: the same walk, halted / never halted",
                   model["after_halt"]["halted 4.5 ms in 1 ms naps"]["walk_us"] / warm["walk_us"]))
    floors.append(("after 4.5 ms halted: arithmetic, halted / never halted (the clock; 1 = no ramp)",
                   halted["arithmetic_us"] / warm["arithmetic_us"]))  # fmt: skip
    pool = results["pool"]
    overhead = pool["overhead_us"]
    rows.append(("pool dispatch: ProcessPoolExecutor / pybridge Pool, per evaluation",
                 overhead["ProcessPoolExecutor.map"] / overhead["pybridge Pool.map(pool, xs)"], ">=", 10))
    rows.append(("pool: 2 simulators over 1, 2 ms evaluations (ideal 2)", pool["speedup"]["speedup"], ">=", 1.8))
    floors.append(("differential evolution, 1 ms evaluations: serial / workers=pool.map",
                   pool["differential_evolution"]["speedup"]))
    floors.append((f"pool dispatch: one vector per request / batches of {BATCH}, per evaluation",
                   overhead["pybridge Pool.map(pool, xs)"] / overhead[f"pybridge Pool.map(pool, xs), batches of {BATCH}"]))
    threads = pool.get("threads")  # absent from the figures of benches before 2026-12-07 evening
    if threads is not None:
        rows.append(("pool: its threads (map of any callable) / its dispatcher (map of the pool), 0.2 ms sleeping "
                     "evaluations, per evaluation", threads["threads_us"] / threads["dispatcher_us"], "<=", 1.3))
    if threads is not None and "simulator_each_us" in threads:  # since 2026-12-07 night
        rows.append(("threads: 2 with a Simulator each / 1, 0.2 ms sleeping evaluations, per evaluation (ideal 0.5)",
                     threads["simulator_each_us"] / threads["one_simulator_us"], "<=", 0.75))
    on_a_pool = pool.get("minimize")  # absent from the figures of benches before 2026-12-07 noon
    if on_a_pool is not None:
        floors.append(("pool: 4 Nelder-Mead starts of pybridge.minimize on 2 simulators, 1 ms evaluations: "
                       "wall / ideal", on_a_pool["wall_s"] / on_a_pool["ideal_s"]))
        floors.append(("pool: pybridge.minimize / SciPy on the pool, Nelder-Mead, fastest model, per evaluation",
                       on_a_pool["minimize_us"] / on_a_pool["scipy_us"]))
    calibration = results["calibration"]
    rows.append(("calibration: Nelder-Mead with journal, progress bar and callback / plain SciPy, median of rounds",
                 calibration["ratio"], "<=", 1.5))  # fmt: skip
    floors.append(("calibration: journal's cost per evaluation, us", calibration["journal_us_per_evaluation"]))
    dask = results["dask"]
    if "skipped" not in dask:
        rows.append(("Dask: DaskPool / bare client.map, per evaluation", dask["dask_pool_us"] / dask["bare_client_map_us"],
                     "<=", 1.2))  # fmt: skip
        rows.append(("Dask: 2 workers over 1, 20 ms evaluations", dask["throughput"]["speedup"], ">=", 1.8))
        floors.append(("Dask: DaskPool / bare client.map of the same chunks, per evaluation",
                       dask["dask_pool_us"] / dask["bare_chunks_us"]))  # fmt: skip
    targets: List[Dict[str, object]] = []
    for name, value, op, bound in rows:
        target: Dict[str, object] = {"target": name, "measured": value, "bound": f"{op} {bound}"}
        if name in intervals:  # met unless the whole interval is beyond the bound
            low, high = intervals[name]
            target.update(interval=[low, high], bound=f"{op} {bound} (95 % interval)")
            target["met"] = low <= bound if op == "<=" else high >= bound
        else:
            target["met"] = value <= bound if op == "<=" else value >= bound
        targets.append(target)
    for name, value in floors:
        targets.append({"target": name, "measured": value, "bound": "(reference)", "met": True,
                        **({"interval": intervals[name]} if name in intervals else {})})  # fmt: skip
    return targets


def tables(results: dict) -> Iterator[str]:
    names = list(results["latency"]["8"])
    yield "Round-trip latency, median (p99), µs — the same C++ cost function behind every transport"
    header = "| transport | " + " | ".join(f"n = {n:,}" for n in SIZES) + " |"
    yield header
    yield "|---|" + "---:|" * len(SIZES)
    for name in names:
        cells = []
        for n in SIZES:
            stats = results["latency"][str(n)][name]
            cells.append(f"{stats['median_us']:.2f} ({stats['p99_us']:.2f})")
        yield f"| {name} | " + " | ".join(cells) + " |"
    yield f"\n8 MB memcpy (np.copyto): {results['memcpy_8mb_us']:.0f} µs"
    yield "\n| end-to-end SciPy run | evaluations | pybridge | in-process pybind11 | ratio |"
    yield "|---|---:|---:|---:|---:|"
    for name, run in results["end_to_end"].items():
        yield (f"| {name} | {run['evaluations']} | {run['pybridge_s']:.3f} s | {run['in_process_s']:.3f} s "
               f"| {run['ratio']:.3f} |")  # fmt: skip
    yield "\n| waiting for 50 ms evaluations | driver CPU | simulator CPU |"
    yield "|---|---:|---:|"
    for label, cpu in results["idle_cpu"].items():
        yield f"| {label} | {cpu['driver_percent']:.2f} % | {cpu['simulator_percent']:.2f} % |"
    model = results["model_time"]
    yield ("\n| model time (±10 %) | wait | added: median | p10 | p90 | driver CPU | simulator CPU beyond the model |")
    yield "|---|---|---:|---:|---:|---:|---:|"
    for model_us, waits in model["model_times"].items():
        for wait, r in waits.items():
            yield (f"| {int(model_us) / 1000:g} ms | {wait} | {r['median_us']:.1f} µs | {r['p10_us']:.1f} | "
                   f"{r['p90_us']:.1f} | {r['driver_percent']:.1f} % | {r['simulator_percent']:.1f} % |")  # fmt: skip
    for change, waits in model["abrupt"].items():
        yield (f"model time {change}: the next 5 evaluations add, median change (all pooled: mean, median) " +
               ", ".join(f"{r['per_change_us']:.0f} µs ({r['mean_us']:.0f}, {r['median_us']:.0f}) ({wait})"
                         for wait, r in waits.items()))  # fmt: skip
    yield ("every core busy, 1 ms: mean round trip " +
           ", ".join(f"{r['mean_round_trip_us']:.0f} µs ({wait})" for wait, r in model["contention"].items()) +
           "; CPU per evaluation, driver / simulator beyond the model: " +
           ", ".join(f"{r['driver_cpu_us']:.0f} / {r['simulator_cpu_us']:.0f} µs ({wait})"
                     for wait, r in model["contention"].items()))  # fmt: skip
    yield ("after a halt of 4.5 ms and a spin of 300 µs, a 32 KiB walk / arithmetic / CPU of the halt: " +
           ", ".join(f"{r['walk_us']:.1f} / {r['arithmetic_us']:.1f} / {r['block_cpu_us']:.0f} µs ({regime})"
                     for regime, r in model["after_halt"].items()))  # fmt: skip
    pool = results["pool"]
    yield "\n| dispatching trivial evaluations on 2 workers | µs per evaluation |"
    yield "|---|---:|"
    for label, us in pool["overhead_us"].items():
        yield f"| {label} | {us:.1f} |"
    if "threads" in pool:
        threads = pool["threads"]
        yield (f"\n{threads['model_ms']:g} ms sleeping evaluations on 2 simulators: map of the pool (dispatcher) "
               f"{threads['dispatcher_us']:.0f} µs, map of any callable (threads) {threads['threads_us']:.0f} µs "
               "per evaluation")
        if "simulator_each_us" in threads:
            yield (f"\nThe same evaluations from threads with a Simulator each: 1 thread {threads['one_simulator_us']:.0f} µs, "
                   f"2 threads {threads['simulator_each_us']:.0f} µs per evaluation")
    speedup, de = pool["speedup"], pool["differential_evolution"]
    yield (f"\n{speedup['evaluations']} evaluations of {speedup['model_ms']:g} ms CPU: 1 simulator "
           f"{speedup['one_s']:.3f} s (ideal {speedup['ideal_1_s']:.3f} s), 2 simulators {speedup['two_s']:.3f} s: "
           f"speed-up {speedup['speedup']:.2f} (ideal {speedup['ideal_speedup']:g})")
    yield (f"differential evolution, {de['evaluations']} evaluations of {de['model_ms']:g} ms: serial "
           f"{de['serial_s']:.3f} s, workers=pool.map {de['pool_s']:.3f} s: speed-up {de['speedup']:.2f} "
           "(same result)")
    calibration = results["calibration"]
    count = max(calibration["evaluations"].values())
    yield f"\n| Nelder-Mead, {count} evaluations of the bundled Rosenbrock (n = 4) | µs per evaluation |"
    yield "|---|---:|"
    for label, us in calibration["per_evaluation_us"].items():
        yield f"| {label} | {us:.1f} |"
    yield ("journal, progress bar and callback / plain SciPy, round by round: " +
           ", ".join(f"{ratio:.2f}" for ratio in calibration["ratios"]))  # fmt: skip
    if "first_run_seconds" in calibration:  # figures from before the warm-up run lack it
        yield ("each variant's first run in the process (not in the rounds), s: " +
               ", ".join(f"{label} {s:.3f}" for label, s in calibration["first_run_seconds"].items()))  # fmt: skip
    dask = results["dask"]
    if "skipped" in dask:
        yield f"\nDask: skipped ({dask['skipped']})"
    else:
        yield f"\n| Dask LocalCluster, 2 workers, {dask['evaluations']} trivial evaluations | µs per evaluation |"
        yield "|---|---:|"
        yield f"| bare client.map, one task per evaluation | {dask['bare_client_map_us']:.1f} |"
        yield f"| bare client.map of the DaskPool's chunks | {dask['bare_chunks_us']:.1f} |"
        yield f"| DaskPool.map(pool, xs) | {dask['dask_pool_us']:.1f} |"
        t = dask["throughput"]
        yield (f"\nDask, {t['evaluations']} evaluations of {t['model_ms']:g} ms: 1 worker {t['one_s']:.3f} s, "
               f"2 workers {t['two_s']:.3f} s: speed-up {t['speedup']:.2f}")
    yield "\n| target | measured | bound | met |"
    yield "|---|---:|---|---|"
    for row in results["targets"]:
        met = "" if row["bound"] == "(reference)" else ("yes" if row["met"] else "NO")
        interval = f" ({row['interval'][0]:.3g}–{row['interval'][1]:.3g})" if "interval" in row else ""
        yield f"| {row['target']} | {row['measured']:.3g}{interval} | {row['bound']} | {met} |"
