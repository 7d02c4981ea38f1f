"""Several driver threads, each with a simulator of its own: do their evaluations overlap?

    python benchmarks/threads.py [--evaluations 200] [--model-us 50,200,1000] [--rounds 3]

For a sleeping model of each length (``pybridge-bench-sim --sleep-us``; sleeping, so that two of them
do not compete for this machine's cores), the wall time per evaluation of one thread with one
simulator, and of two threads with one each (each thread does ``--evaluations``; both at once, the
ideal is half the first). The second is the case a thread's wait must not spoil by holding the GIL:
``pool.map`` of any callable, or a user's own threads (a `Simulator`'s wait holds the GIL through its
spin only while its thread is the process's only driver thread: docs/performance.md). Then the same through a Pool of two, both ways
in: its dispatcher (``pool.map(pool, xs)``, one thread) and its threads (``pool.map`` of another
callable), as `pybridge bench` measures them at 0.2 ms. Best of ``--rounds`` (the pool's: of 3), µs
per evaluation. Run from /tmp, so that the installed package is measured.
"""

from __future__ import annotations

import argparse

from pybridge.cli.bench.pool import _simulator_each, _threads_against_dispatcher


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--evaluations", type=int, default=200)
    parser.add_argument("--model-us", default="50,200,1000")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    print("model    one thread  two threads  (ideal: half)   pool dispatcher  pool threads   us per evaluation")
    for model_us in (int(v) for v in args.model_us.split(",")):
        one = min(_simulator_each(model_us, 1, args.evaluations) for _ in range(args.rounds))
        two = min(_simulator_each(model_us, 2, args.evaluations) for _ in range(args.rounds))
        pool = _threads_against_dispatcher(2 * args.evaluations, model_us)  # best of 3 of its own
        print(f"{model_us:>5} us {one:>11.0f} {two:>12.0f} {two / one:>14.2f} {pool['dispatcher_us']:>18.0f} "
              f"{pool['threads_us']:>13.0f}")


if __name__ == "__main__":
    main()
