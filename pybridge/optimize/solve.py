"""``pybridge.minimize``: one call for any SciPy method, on a Simulator or a Pool, with named
parameters, multi-start, stopping rules, a journal that resumes, and progress."""

from __future__ import annotations

import contextlib
import inspect
import math
import os
from concurrent.futures import Future, ThreadPoolExecutor
from typing import IO, Any, Callable, Dict, List, Mapping, Optional, Sequence, Union

import numpy as np
import scipy
import scipy.optimize as so

from ..core.policy import EVALUATION_ERRORS
from ..errors import ParameterError
from ..protocol import Capability
from ..record.journal import Journal
from ..record.progress import ProgressBar
from .calibration import Calibration, Objective, Stopped
from .params import ParameterLike, Parameters
from .stopping import MaxEvaluations, Rule

__all__ = ["minimize", "CalibrationResult", "GLOBAL_METHODS", "LOCAL_METHODS"]

#: ``scipy.optimize.minimize`` methods that use a gradient (the simulator's, or finite differences).
_GRADIENT_METHODS = {"cg", "bfgs", "newton-cg", "l-bfgs-b", "tnc", "slsqp", "trust-constr"}
#: Methods that need a Hessian, which no simulator provides.
_HESSIAN_METHODS = {"dogleg", "trust-ncg", "trust-exact", "trust-krylov"}
LOCAL_METHODS = frozenset(_GRADIENT_METHODS | {"nelder-mead", "powell", "cobyla", "cobyqa", "least_squares"})
GLOBAL_METHODS = frozenset({"differential_evolution", "shgo", "dual_annealing", "direct"})
#: Methods that ignore bounds: SciPy's minimize warns and goes on, so the simulator would be evaluated
#: outside the declared ones. Refused unless every parameter is unbounded.
_UNBOUNDED_METHODS = {"cg", "bfgs", "newton-cg"}
if tuple(int(part) for part in scipy.__version__.split(".")[:2]) < (1, 11):
    _UNBOUNDED_METHODS.add("cobyla")  # bounds arrived in SciPy 1.11
#: Methods that keep constraints. The others drop them (minimize with a warning, dual_annealing and
#: direct silently) and return a point that may break them: refused when constraints are given.
_CONSTRAINED_METHODS = {"slsqp", "cobyla", "cobyqa", "trust-constr", "differential_evolution", "shgo"}
#: Global methods that draw random numbers: ``seed`` seeds them unless their options do.
_DRAWING_METHODS = {"differential_evolution": so.differential_evolution, "dual_annealing": so.dual_annealing}
_INTERRUPTED = "interrupted (Ctrl-C)"


class CalibrationResult(so.OptimizeResult):
    """SciPy's ``OptimizeResult`` fields (``x``, ``fun``, ``success``, ``message``, ``nfev``, ``nit``, ...)
    with ``x`` the physical flat vector, plus:

    - ``params``: the values by name (``result.params["alpha"]``);
    - ``stop_rule``: the name of the stopping rule that ended the run (``"interrupted"`` for Ctrl-C),
      or None when the method ended by itself;
    - ``starts``: every start's own result (one for a single start), best first is ``result`` itself;
    - ``evaluations`` (computed in this call), ``replayed`` (taken from the journal), ``journal``;
    - ``solver``: the SciPy method's own result, in its own (scaled) variables, when it ended by itself.

    Printed, it shows SciPy's fields and these, with ``starts`` and ``solver`` summed up in a line each
    (in full, twenty starts would print each start's fields twice).
    """

    def __repr__(self) -> str:
        shown = so.OptimizeResult(self)
        starts = self.get("starts")
        if starts:
            funs = [start.get("fun", math.nan) for start in starts]
            shown["starts"] = _Shown(f"{len(starts)} start{'s' if len(starts) != 1 else ''}, fun from "
                                     f"{min(funs):.6g} to {max(funs):.6g} (result.starts)")  # fmt: skip
        if self.get("solver") is not None:
            shown["solver"] = _Shown(f"SciPy's {type(self['solver']).__name__}, in its own variables (result.solver)")
        return repr(shown)


class _Shown:
    """A value that prints as the given text (OptimizeResult prints values with str)."""

    def __init__(self, text: str) -> None:
        self.text = text

    def __str__(self) -> str:
        return self.text


def minimize(
    evaluator: Any,
    params: "Parameters | Mapping[str, ParameterLike]",
    method: Optional[str] = None,
    *,
    x0: "Mapping[str, Any] | np.typing.ArrayLike | None" = None,
    constraints: Any = (),
    options: Optional[Mapping[str, Any]] = None,
    tol: Optional[float] = None,
    n_starts: int = 1,
    sampler: str = "sobol",
    seed: Optional[int] = 0,
    stop: Union[Rule, Sequence[Rule]] = (),
    callback: Union[None, Callable[[Any], Any], Sequence[Callable[[Any], Any]]] = None,
    journal: "str | os.PathLike[str] | None" = None,
    resume: bool = False,
    replay_tolerance: float = 0.0,
    check_command: bool = True,
    progress: "bool | IO[str] | None" = None,
) -> CalibrationResult:
    """Calibrates named ``params`` of the simulator(s) behind ``evaluator`` with a SciPy method.

    With the bundled Rosenbrock simulator on a pool of two:

    >>> import pybridge
    >>> from pybridge.paths import bundled_simulator
    >>> from pybridge.optimize import MaxEvaluations
    >>> with pybridge.Pool([bundled_simulator("pybridge-rosenbrock")], workers=2, n_params=2) as pool:
    ...     result = pybridge.minimize(pool, {"a": (-2, 2), "b": (-2, 2)}, method="L-BFGS-B",
    ...                                n_starts=4, stop=MaxEvaluations(2000))
    >>> round(result.params["a"], 4), round(result.params["b"], 4), len(result.starts)
    (1.0, 1.0, 4)

    Parameters
    ----------
    evaluator:
        A :class:`~pybridge.Simulator`, a :class:`~pybridge.Pool` (parallel finite differences,
        populations and starts), or anything with their ``evaluate(xs, kind)``.
    params:
        A :class:`~pybridge.optimize.Parameters` declaration, or a dict ``{name: (low, high)}``.
    method:
        Any ``scipy.optimize.minimize`` method without a Hessian (``"L-BFGS-B"``, ``"Nelder-Mead"``,
        ``"SLSQP"``, ``"trust-constr"``, ``"COBYQA"``, ...), ``"least_squares"`` (residual simulators),
        or a global method: ``"differential_evolution"``, ``"shgo"``, ``"dual_annealing"``,
        ``"direct"``. Default: ``"least_squares"`` for a residual simulator, ``"L-BFGS-B"`` otherwise.
        Gradient methods use the simulator's gradient if it computes one, else finite differences —
        in parallel on a pool.
    x0:
        The start of a local method (a dict may name some parameters; the others start at their
        ``start`` or the middle of their bounds). With ``n_starts`` > 1 it is the first start.
        ``dual_annealing`` begins from it, ``differential_evolution`` puts it in place of the first
        member of its population if given; ``shgo`` and ``direct`` take none (refused).
    constraints:
        SciPy's own (``LinearConstraint``, ``NonlinearConstraint``, dicts), on the physical vector, for
        the methods that keep them: ``"SLSQP"``, ``"COBYLA"``, ``"COBYQA"``, ``"trust-constr"``,
        ``"differential_evolution"``, ``"shgo"``. Any other method is refused with constraints (SciPy
        would drop them), and ``"CG"``, ``"BFGS"``, ``"Newton-CG"`` with bounded parameters (SciPy
        would step outside the bounds).
    options:
        Passed to the method: ``minimize``'s ``options``, or the global method's / ``least_squares``'s
        keyword arguments (``{"seed": 1, "popsize": 20}`` for differential evolution). Parallel
        evaluation is the evaluator's: a :class:`~pybridge.Pool` (``workers`` as a number of processes,
        and ``vectorized``, are refused; ``workers`` may be a map function).
    tol:
        SciPy's: ``scipy.optimize.minimize``'s ``tol`` (each method sets its own tolerances from it),
        or ``differential_evolution``'s. The other global methods and ``least_squares`` name their
        tolerances in ``options`` (refused here).
    n_starts, sampler, seed:
        Multi-start for local methods: ``n_starts`` starting points drawn inside the bounds by
        ``scipy.stats.qmc`` (``"sobol"`` or ``"lhs"``, seeded), run concurrently on a pool (one after
        the other on a single simulator). The result is the best; ``result.starts`` holds all.
        ``seed`` also seeds ``differential_evolution`` and ``dual_annealing`` unless ``options`` give
        their ``seed`` or ``rng``: every run is reproducible, and a resume of one replays its journal.
        ``seed=None`` draws afresh.
    stop:
        Stopping rules (:mod:`pybridge.optimize.stopping`); the first that fires ends every start
        with its best point so far. Ctrl-C does the same.
    callback:
        Called with every :class:`~pybridge.record.Evaluation` and :class:`~pybridge.record.Iteration`.
    journal, resume, replay_tolerance:
        Append every evaluation to this SQLite file. ``resume=True`` replays the evaluations it holds
        (a vector equal to a journalled one, or within ``replay_tolerance`` relative to max(1, |x|))
        instead of recomputing them, so that a killed calibration carries on; a deterministic method
        then reaches the result of an uninterrupted run bit for bit. A journal of another problem is
        refused (:class:`~pybridge.JournalError`).
    check_command:
        ``False`` resumes a journal whose simulator was started by another command, for the same model
        started another way (a resubmitted job with its own scratch path or hostfile, an executable
        moved or rebuilt from the same source). You vouch that the model is the same: the parameters,
        their bounds and the simulator's sizes and capabilities are still checked. The run's own
        command is kept in its ``options`` in the journal.
    progress:
        A progress bar on stderr (True), none (False), or on stderr only if it is a terminal (None);
        or a stream to draw it on.
    """
    if not callable(getattr(evaluator, "evaluate", None)):
        raise TypeError(
            f"evaluator must be a pybridge.Simulator, a pybridge.Pool, a DaskPool, or have their evaluate(xs, kind), "
            f"not {type(evaluator).__name__}. A plain Python function goes to scipy.optimize directly"
        )
    problem = Parameters.of(params)
    method_name = _method(method, evaluator)
    rules = _rules(stop)
    callbacks = _callbacks(callback)
    options = _options(options)
    tol = _tolerance(tol, method_name, options)
    if isinstance(n_starts, bool) or not isinstance(n_starts, (int, np.integer)) or n_starts < 1:
        raise ValueError(f"n_starts must be a whole number of starts, at least 1, not {n_starts!r}")
    if not 0 <= replay_tolerance < math.inf:
        raise ValueError(f"replay_tolerance must be a finite number >= 0 (0: exact matches), not {replay_tolerance!r}")
    if resume and journal is None:
        raise ValueError("resume=True needs journal=PATH, the journal whose evaluations are replayed")
    for keyword, asked in (("replay_tolerance", replay_tolerance != 0), ("check_command", not check_command)):
        if asked and not resume:
            raise ValueError(f"{keyword} applies to a resume: pass resume=True (and the journal) with it")
    if not (progress is None or isinstance(progress, bool) or callable(getattr(progress, "write", None))):
        raise TypeError(f"progress must be True, False, None or a stream to draw on, not {progress!r}")
    n_params = getattr(evaluator, "n_params", problem.size)
    if n_params != problem.size:
        raise ParameterError(
            f"the simulator takes {n_params} parameter values; the declaration has {problem.size} "
            f"({', '.join(problem.labels)})"
        )
    _require_kept(method, method_name, problem, constraints)
    if method_name in GLOBAL_METHODS:
        if n_starts > 1:
            raise ValueError(f"{method_name} searches the whole box itself; n_starts is for local methods")
        if x0 is not None and method_name in ("shgo", "direct"):
            raise ValueError(f"{method_name} takes no start (x0): it samples the whole box itself. Leave x0 out, or "
                             "use differential_evolution or dual_annealing, which begin from it")  # fmt: skip
        _require_finite_bounds(problem, method_name)
    starts = _starting_points(problem, x0, n_starts, sampler, seed)
    if method_name == "differential_evolution" and x0 is not None:
        options.setdefault("x0", problem.to_solver(starts[0]).tolist())  # in place of a first member
    drawing = _DRAWING_METHODS.get(method_name)
    if drawing is not None and seed is not None and not {"seed", "rng"} & set(options):
        # Seeded by default, like the starts: a run is reproducible, and a resume retraces its path and
        # replays the journal (an unseeded one draws other vectors and replays nothing). SciPy >= 1.15
        # names it rng.
        options["rng" if "rng" in inspect.signature(drawing).parameters else "seed"] = seed

    opened = None
    identity = _problem(problem, evaluator)
    if journal is not None:
        opened = Journal(journal, identity, problem.labels, resume=resume, check_command=check_command)
    bar = None
    calibration: Optional[Calibration] = None
    run_open = False  # begun in the journal and not yet ended there
    try:
        replay = opened.replayable() if (opened is not None and resume) else None
        if opened is not None:
            described = {"options": _jsonable(options), "n_starts": n_starts, "sampler": sampler, "seed": seed}
            if tol is not None:
                described["tol"] = tol
            if not check_command:  # the journal's problem keeps the first run's command; this is this run's
                described["command"] = identity["simulator"]["command"]
            opened.begin_run(method_name, described, resumed=bool(replay))
            run_open = True
        budget = next((rule.count for rule in rules if isinstance(rule, MaxEvaluations)), None)
        if progress is None or isinstance(progress, bool):
            bar = ProgressBar(progress, total=budget)
        else:  # a stream to draw on
            bar = ProgressBar(True, total=budget, file=progress)
        calibration = Calibration(evaluator, problem, rules=rules, callbacks=callbacks, journal=opened,
                                  replay=replay, replay_tolerance=replay_tolerance, progress=bar)  # fmt: skip
        for rule in rules:
            rule.begin()
        try:
            results = _run_starts(calibration, method_name, starts, constraints, options, tol)
        finally:
            try:
                calibration.flush()
            finally:
                for rule in rules:
                    rule.end()
        best = min(results, key=lambda r: (math.isnan(r.fun), r.fun))
        result = CalibrationResult(best)
        result.starts = results
        result.evaluations = calibration.computed
        result.replayed = calibration.replayed
        result.journal = None if opened is None else str(opened.path)
        if opened is not None:
            run_open = False
            opened.end_run(str(result.message), float(result.fun))
        return result
    except BaseException as error:
        # The journal says the run ended, and why: else it reads as one still going, or killed.
        if opened is not None and run_open:
            best_cost = calibration.progress.best_cost if calibration is not None else math.nan
            with contextlib.suppress(Exception):  # the error raised here is the one to report
                opened.end_run(f"failed: {type(error).__name__}: {error}", best_cost)
        raise
    finally:
        if bar is not None:
            bar.close()
        if opened is not None:
            opened.close()


# ---- starts ------------------------------------------------------------------------------


def _run_starts(calibration: Calibration, method: str, starts: List[np.ndarray], constraints: Any,
                options: Dict[str, Any], tol: Optional[float]) -> List[CalibrationResult]:  # fmt: skip
    if len(starts) == 1 or calibration.concurrency == 1:
        results = []
        for index, x0 in enumerate(starts):
            results.append(_solve(calibration, method, index, x0, constraints, options, tol))
        return results
    with ThreadPoolExecutor(max_workers=min(len(starts), calibration.concurrency),
                            thread_name_prefix="pybridge-start") as threads:  # fmt: skip
        futures: List[Future] = []

        def submit_the_rest() -> None:
            for i in range(len(futures), len(starts)):
                futures.append(threads.submit(_solve, calibration, method, i, starts[i], constraints, options, tol,
                                              False))  # fmt: skip

        # Ctrl-C may come while starts are still being started (a loaded machine can take long enough
        # over a thread's start for the first start to have made hundreds of evaluations): it ends the
        # run there too, or the starts already running would go on to their end, waited for.
        try:
            submit_the_rest()
            return [future.result() for future in futures]
        except KeyboardInterrupt:
            # Every start ends at its next evaluation, one not started yet at its first; their results
            # still come back.
            calibration.stop(_INTERRUPTED, "interrupted")
            submit_the_rest()
            return [future.result() for future in futures]


def _solve(calibration: Calibration, method: str, start: int, x0: np.ndarray, constraints: Any,
           options: Dict[str, Any], tol: Optional[float], main_thread: bool = True) -> CalibrationResult:  # fmt: skip
    objective = Objective(calibration, start)
    try:
        raw = _scipy(objective, method, calibration.params.to_solver(x0), constraints, options, tol)
    except KeyboardInterrupt:
        if not main_thread:
            raise
        calibration.stop(_INTERRUPTED, "interrupted")
        return _stopped(calibration, start, x0)
    except Exception as error:
        original = error
        cause = error.__cause__ or error.__context__
        if isinstance(error, SystemError) and isinstance(cause, Exception):
            # SciPy < 1.14's direct (C code) turns an exception raised in the objective into a
            # SystemError with the original as its cause: take the original.
            original = cause
        # A failed evaluation ends the run by the stop asked for before it, if any: a batch system's
        # SIGTERM (OnSignal) kills the simulator too, and the crash is its doing (it is journalled).
        # Any other error (a callback's, a journal's) is raised whatever was asked.
        if isinstance(original, Stopped) or (isinstance(original, EVALUATION_ERRORS) and calibration.stopping()):
            return _stopped(calibration, start, x0)
        if original is not error:
            raise original from None
        raise
    return _finished(calibration, start, raw, method)


def _finished(calibration: Calibration, start: int, raw: Any, method: str) -> CalibrationResult:
    calibration.end_start(start)
    params = calibration.params
    result = CalibrationResult(raw)
    result.solver = raw
    result.x = params.from_solver(raw.x)
    if method == "least_squares":
        result.residuals = raw.fun
        result.fun = float(raw.cost)
    else:
        result.fun = float(raw.fun)
    # The objective's gradient in SciPy's variables, restated on the physical ones. trust-constr keeps it
    # in grad, and the constraints' Jacobians (a list) in jac: those stay as SciPy gave them.
    for field in ("jac", "grad"):
        value = getattr(raw, field, None)
        if isinstance(value, np.ndarray) and value.shape == (params.size,):
            result[field] = value / params.solver_scale
    result.params = params.unflatten(result.x)
    result.stop_rule = None
    result.start = start
    result.nfev = calibration.evaluations_by_start.get(start, 0)
    result.nit = int(getattr(raw, "nit", calibration.iterations_of(start)))
    return result


def _stopped(calibration: Calibration, start: int, x0: np.ndarray) -> CalibrationResult:
    calibration.end_start(start)
    cost, x = calibration.best.get(start, (math.nan, None))
    x = x0 if x is None else x
    message = f"stopped: {calibration.stop_message}"
    return CalibrationResult(
        x=x.copy(), fun=cost, params=calibration.params.unflatten(x), success=calibration.stop_rule == "target_cost",
        message=message, stop_rule=calibration.stop_rule, start=start,
        nfev=calibration.evaluations_by_start.get(start, 0), nit=calibration.iterations_of(start),
    )  # fmt: skip


# ---- one SciPy call ----------------------------------------------------------------------


def _scipy(objective: Objective, method: str, z0: np.ndarray, constraints: Any, options: Dict[str, Any],
           tol: Optional[float]) -> Any:  # fmt: skip
    calibration = objective.calibration
    params = calibration.params
    lower, upper = params.solver_bounds
    bounds = so.Bounds(lower, upper)
    parallel = calibration.concurrency > 1
    constraints = _solver_constraints(constraints, params)
    callback = objective.iteration_callback
    if method == "least_squares":
        kwargs = dict(options)
        if parallel and "workers" in inspect.signature(so.least_squares).parameters:
            kwargs.setdefault("workers", objective.map)
        if "callback" in inspect.signature(so.least_squares).parameters:
            kwargs.setdefault("callback", callback)
        return so.least_squares(objective.residuals, z0, bounds=(lower, upper), **kwargs)
    if method == "differential_evolution":
        kwargs = dict(options)
        if parallel:
            kwargs.setdefault("workers", objective.map)
            kwargs.setdefault("updating", "deferred")
        if constraints:
            kwargs["constraints"] = constraints
        return so.differential_evolution(objective.cost, bounds, callback=callback, **kwargs)
    if method == "shgo":
        kwargs = dict(options)
        if parallel and "workers" in inspect.signature(so.shgo).parameters:
            kwargs.setdefault("workers", objective.map)
        return so.shgo(objective.cost, list(zip(lower, upper)), constraints=constraints or None, callback=callback,
                       **kwargs)  # fmt: skip
    if method == "dual_annealing":
        return so.dual_annealing(objective.cost, list(zip(lower, upper)), x0=z0, callback=objective.annealing_callback,
                                 **options)  # fmt: skip
    if method == "direct":
        return so.direct(objective.cost, bounds, callback=callback, **options)
    # scipy.optimize.minimize
    local: Dict[str, Any] = {"method": method, "options": options, "callback": callback, "tol": tol}
    if method not in _UNBOUNDED_METHODS:  # they take none (SciPy would warn); only unbounded ones get here
        local["bounds"] = bounds
    if constraints:
        local["constraints"] = constraints
    capabilities = Capability(getattr(calibration.evaluator, "capabilities", Capability.NONE))
    if method in _GRADIENT_METHODS:
        if capabilities & Capability.GRADIENT:
            return so.minimize(objective.value_and_grad, z0, jac=True, **local)
        if parallel:
            from ..pool.finite_diff import FiniteDifferences

            finite = np.isfinite(lower) | np.isfinite(upper)
            jac = FiniteDifferences(objective, bounds=list(zip(lower, upper)) if finite.any() else None)
            return so.minimize(objective.cost, z0, jac=jac, **local)
    return so.minimize(objective.cost, z0, **local)


def _constraint_items(constraints: Any) -> List[Any]:
    """The user's constraints as a list, each checked to be one SciPy takes."""
    if constraints is None:
        return []
    single = isinstance(constraints, (dict, so.LinearConstraint, so.NonlinearConstraint, so.Bounds))
    items = [constraints] if single or not isinstance(constraints, (list, tuple)) else list(constraints)
    for item in items:
        if isinstance(item, so.Bounds):
            raise TypeError("Bounds belong to the parameters, not the constraints: declare {name: "
                            "scipy.optimize.Bounds(lb, ub)} or Parameter(Bounds(lb, ub))")  # fmt: skip
        if not isinstance(item, (dict, so.LinearConstraint, so.NonlinearConstraint)):
            raise TypeError(f"constraints must be SciPy's LinearConstraint, NonlinearConstraint or dicts, not {item!r}")
    return items


def _solver_constraints(constraints: Any, params: Parameters) -> Any:
    """The user's constraints on the physical vector, restated on SciPy's (scaled) vector."""
    items = _constraint_items(constraints)
    if not items or not params.scaled.any():
        return items
    offset, width = params.solver_offset, params.solver_scale
    restated: List[Any] = []
    for item in items:
        if isinstance(item, so.LinearConstraint):
            # A x = A (offset + width z): A' = A diag(width), bounds shifted by A offset.
            matrix = np.atleast_2d(np.asarray(item.A, dtype=float))
            shift = matrix @ offset
            restated.append(so.LinearConstraint(matrix * width, np.asarray(item.lb) - shift, np.asarray(item.ub) - shift,
                                                keep_feasible=item.keep_feasible))  # fmt: skip
        elif isinstance(item, so.NonlinearConstraint):
            fun = item.fun
            jac = item.jac
            restated.append(so.NonlinearConstraint(
                lambda z, fun=fun: fun(params.from_solver(z)), item.lb, item.ub,
                jac=(lambda z, jac=jac: np.asarray(jac(params.from_solver(z))) * width) if callable(jac) else jac,
                keep_feasible=item.keep_feasible))  # fmt: skip
        elif isinstance(item, dict):
            new = dict(item)
            fun = item["fun"]
            new["fun"] = lambda z, *args, fun=fun: fun(params.from_solver(z), *args)
            if callable(item.get("jac")):
                jac = item["jac"]
                new["jac"] = lambda z, *args, jac=jac: np.asarray(jac(params.from_solver(z), *args)) * width
            restated.append(new)
    return restated


# ---- checks and descriptions ---------------------------------------------------------------


def _method(method: Optional[str], evaluator: Any) -> str:
    capabilities = Capability(getattr(evaluator, "capabilities", Capability.NONE))
    if method is None:
        return "least_squares" if capabilities & Capability.RESIDUALS else "l-bfgs-b"
    name = method.lower().replace("-", "_") if method.lower().replace("-", "_") in GLOBAL_METHODS | {
        "least_squares"} else method.lower()  # fmt: skip
    if name in _HESSIAN_METHODS:
        raise ValueError(f"method {method!r} needs a Hessian, which a simulator does not provide; use 'trust-constr' "
                         "or 'L-BFGS-B'")  # fmt: skip
    if name not in LOCAL_METHODS | GLOBAL_METHODS:
        raise ValueError(
            f"unknown method {method!r}; use a scipy.optimize.minimize method, 'least_squares', or one of "
            f"{', '.join(sorted(GLOBAL_METHODS))}"
        )
    if name == "least_squares" and not capabilities & Capability.RESIDUALS:
        raise ValueError("least_squares needs a simulator that returns residuals (PYBRIDGE_CAP_RESIDUALS)")
    return name


def _tolerance(tol: Optional[float], method: str, options: Dict[str, Any]) -> Optional[float]:
    """SciPy's ``tol`` for the methods whose SciPy function takes one; ``differential_evolution``'s goes
    into its keyword arguments (``options``), ``minimize``'s is passed apart (returned)."""
    if tol is None:
        return None
    if isinstance(tol, bool) or not isinstance(tol, (int, float, np.floating, np.integer)) or not 0 < tol < math.inf:
        raise ValueError(f"tol must be a number > 0, as SciPy's, not {tol!r}")
    if method == "differential_evolution":
        if "tol" in options:
            raise ValueError(f"tol given twice: tol={tol!r} and options={{'tol': {options['tol']!r}}}; give one")
        options["tol"] = float(tol)
        return None
    if method in GLOBAL_METHODS or method == "least_squares":
        raise ValueError(f"tol is scipy.optimize.minimize's (and differential_evolution's); give {method}'s own "
                         f"tolerances in options (see scipy.optimize.{method})")  # fmt: skip
    return float(tol)


def _options(options: Optional[Mapping[str, Any]]) -> Dict[str, Any]:
    """The method's options, as a dict of our own, without what would take the simulator elsewhere."""
    if options is not None and not isinstance(options, Mapping):
        raise TypeError(f"options must be a dict of the method's options, not {type(options).__name__}")
    checked = dict(options or {})
    workers = checked.get("workers")
    if workers is not None and not callable(workers):
        raise ValueError(
            f"options workers={workers!r}: SciPy's own process pool would have to copy the simulator into other "
            "processes. Evaluate in parallel with a pybridge.Pool(command, workers=N) as the evaluator (its "
            "simulators take the population, the starts or the finite differences), or give workers a map function"
        )
    if checked.get("vectorized"):
        raise ValueError("options vectorized=True: pybridge hands SciPy one value per vector; on a pybridge.Pool a "
                         "population is already sent at once. Leave vectorized out")  # fmt: skip
    return checked


def _rules(stop: Any) -> List[Rule]:
    rules = [stop] if isinstance(stop, Rule) else list(stop) if isinstance(stop, (list, tuple)) else None
    if rules is None or not all(isinstance(rule, Rule) for rule in rules):
        raise TypeError(f"stop must be a stopping rule of pybridge.optimize (MaxEvaluations(1000), TargetCost(1e-6), "
                        f"...) or a list of them, not {stop!r}")  # fmt: skip
    return rules


def _callbacks(callback: Any) -> List[Callable[[Any], Any]]:
    callbacks = [] if callback is None else [callback] if callable(callback) else None
    if callbacks is None and isinstance(callback, (list, tuple)) and all(callable(c) for c in callback):
        callbacks = list(callback)
    if callbacks is None:
        raise TypeError(f"callback must be a function of one record, or a list of them, not {callback!r}")
    return callbacks


def _require_kept(method: Optional[str], name: str, params: Parameters, constraints: Any) -> None:
    """Refuses a method that would not keep the declared bounds or the given constraints."""
    method = name if method is None else method  # the default one, by the name it was chosen by
    finite = np.isfinite(params.lower) | np.isfinite(params.upper)
    if name in _UNBOUNDED_METHODS and finite.any():
        i = int(np.flatnonzero(finite)[0])
        raise ValueError(
            f"method {method!r} cannot keep the parameters inside their bounds: SciPy's {name} ignores bounds, "
            f"so the simulator would be evaluated outside them ({params.labels[i]} in [{params.lower[i]:g}, "
            f"{params.upper[i]:g}]). Use 'L-BFGS-B' (BFGS with bounds), or declare the parameters unbounded, "
            "(None, None), with a start"
        )
    if _constraint_items(constraints) and name not in _CONSTRAINED_METHODS:
        raise ValueError(
            f"method {method!r} cannot keep constraints: SciPy would drop them and return a point that may break "
            "them. Use 'SLSQP', 'COBYQA', 'COBYLA' or 'trust-constr', or globally 'differential_evolution' or 'shgo'"
        )


def _require_finite_bounds(params: Parameters, why: str) -> None:
    infinite = ~(np.isfinite(params.lower) & np.isfinite(params.upper))
    if infinite.any():
        raise ParameterError(f"{why} needs finite bounds; {params.labels[int(np.flatnonzero(infinite)[0])]} has none")


def _starting_points(params: Parameters, x0: Any, n_starts: int, sampler: str, seed: Optional[int]) -> List[np.ndarray]:
    if n_starts == 1:
        return [params.start(x0)]
    _require_finite_bounds(params, "n_starts > 1")
    from scipy.stats import qmc

    if sampler == "sobol":
        engine: Any = qmc.Sobol(params.size, scramble=True, seed=seed)
        # Drawn as a power of two (Sobol's balance) and cut: the same first points whatever n_starts.
        unit = engine.random_base2(max(0, math.ceil(math.log2(n_starts))))[:n_starts]
    elif sampler == "lhs":
        unit = qmc.LatinHypercube(params.size, seed=seed).random(n_starts)
    else:
        raise ValueError(f"sampler must be 'sobol' or 'lhs', not {sampler!r}")
    points = [params.lower + u * (params.upper - params.lower) for u in unit]
    if x0 is not None:
        points = [params.start(x0)] + points[:-1]
    return points


def _problem(params: Parameters, evaluator: Any) -> Dict[str, Any]:
    """What a journal is the journal of: the parameters and the simulator."""
    command = getattr(evaluator, "command", None)
    return {
        "parameters": params.describe(),
        "simulator": {
            "command": None if command is None else [str(part) for part in command],
            "n_params": int(getattr(evaluator, "n_params", params.size)),
            "n_residuals": int(getattr(evaluator, "n_residuals", 0)),
            "capabilities": int(getattr(evaluator, "capabilities", 0)),
        },
    }


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, np.generic):
        return value.item()
    return repr(value)

