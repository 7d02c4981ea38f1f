"""
Compiled half of pybridge: protocol tables, both ends of the shim, OS helpers.
"""
from __future__ import annotations
import collections.abc
import numpy
import numpy.typing
import typing
import typing_extensions
__all__: list[str] = ['CAPABILITIES', 'CHANNEL_ENV', 'CHANNEL_NAME_MAX', 'DriverPort', 'ERROR_TEXT_SIZE', 'FastCall', 'HEADER_SIZE', 'LIVENESS_PERIOD_MS', 'MAGIC', 'NAME_PREFIX', 'PROTOCOL_VERSION', 'REGION_ALIGN', 'REPLY_SEM_SUFFIX', 'REPLY_STATUSES', 'REQUEST_KINDS', 'REQUEST_SEM_SUFFIX', 'Recorder', 'SEMAPHORE_NAME_SIZE', 'STATES', 'STATUS_CODES', 'SimulatorChannel', 'driver_thread_alone', 'header_fields', 'layout', 'measure_latency', 'new_name', 'process_alive', 'residual_cost', 'take_latency', 'unlink_segment', 'validate_header', 'wait_any']
class SimulatorChannel:
    """
    The simulator's end of a channel (pybridge_channel_*).
    """
    def __init__(self, name: str | None = None, n_params: typing.SupportsInt | typing.SupportsIndex = 0, n_residuals: typing.SupportsInt | typing.SupportsIndex = 0, capabilities: typing.SupportsInt | typing.SupportsIndex = 0, max_batch: typing.SupportsInt | typing.SupportsIndex = 0) -> None:
        ...
    def driver_alive(self) -> bool:
        """
        False once the driver died or closed the channel (pybridge_channel_driver_alive).
        """
    def reply(self, cost: typing.SupportsFloat | typing.SupportsIndex) -> None:
        ...
    def reply_batch(self) -> None:
        """
        Replies to the current request: its costs (and gradients or residuals) are filled in place.
        """
    def reply_error(self, message: str) -> None:
        ...
    def reply_residuals(self) -> None:
        ...
    def set_watchdog(self, enabled: bool) -> None:
        ...
    def wait(self) -> typing.Any:
        ...
    @property
    def name(self) -> str:
        ...
class DriverPort:
    class Outcome:
        """
        Where the latest request stands (enum pybridge_outcome).
        
        Members:
        
          NOT_SENT
        
          PENDING
        
          ANSWERED
        """
        ANSWERED: typing.ClassVar[DriverPort.Outcome]
        NOT_SENT: typing.ClassVar[DriverPort.Outcome]
        PENDING: typing.ClassVar[DriverPort.Outcome]
        __members__: typing.ClassVar[dict[str, DriverPort.Outcome]]
        @typing.overload
        def __eq__(self, other: DriverPort.Outcome) -> bool:
            ...
        @typing.overload
        def __eq__(self, other: typing.SupportsInt | typing.SupportsIndex) -> bool:
            ...
        @typing.overload
        def __eq__(self, other: typing.Any) -> bool:
            ...
        def __getstate__(self) -> int:
            ...
        def __hash__(self) -> int:
            ...
        def __index__(self) -> int:
            ...
        def __init__(self, value: typing.SupportsInt | typing.SupportsIndex) -> None:
            ...
        def __int__(self) -> int:
            ...
        @typing.overload
        def __ne__(self, other: DriverPort.Outcome) -> bool:
            ...
        @typing.overload
        def __ne__(self, other: typing.SupportsInt | typing.SupportsIndex) -> bool:
            ...
        @typing.overload
        def __ne__(self, other: typing.Any) -> bool:
            ...
        def __repr__(self) -> str:
            ...
        def __setstate__(self, state: typing.SupportsInt | typing.SupportsIndex) -> None:
            ...
        def __str__(self) -> str:
            ...
        @property
        def name(self) -> str:
            ...
        @property
        def value(self) -> int:
            ...
    allow_nonfinite: bool
    def __init__(self, name: str, doorbell: str | None, poll_seconds: typing.SupportsFloat | typing.SupportsIndex) -> None:
        ...
    def accept(self, n_params: typing.SupportsInt | typing.SupportsIndex, n_residuals: typing.SupportsInt | typing.SupportsIndex, capabilities: typing.SupportsInt | typing.SupportsIndex, max_batch: typing.SupportsInt | typing.SupportsIndex, spin_us: typing.SupportsInt | typing.SupportsIndex, forecast: bool = True) -> None:
        ...
    def batch_values(self, kind: typing.SupportsInt | typing.SupportsIndex) -> typing.Any:
        """
        The answered batch's costs (COST), (costs, gradients) (GRADIENT) or residuals (RESIDUALS), every value as the simulator sent it; None unless answered without a reported failure.
        """
    def finish(self, kind: typing.SupportsInt | typing.SupportsIndex) -> typing.Any:
        """
        The value of the request start() sent, after at most one wait slice; None for the slow path.
        """
    def finish_batch(self, kind: typing.SupportsInt | typing.SupportsIndex) -> typing.Any:
        """
        The values of the batch start_batch() sent, after at most one wait slice; None while pending or failed.
        """
    def reject(self, reason: str) -> None:
        ...
    def release(self) -> None:
        ...
    def reply(self) -> tuple:
        """
        (reply_status, cost, error text) of the answered request.
        """
    def send(self, x: typing.Any, kind: typing.SupportsInt | typing.SupportsIndex) -> bool:
        ...
    def serves(self, kind: typing.SupportsInt | typing.SupportsIndex) -> bool:
        ...
    def shutdown(self) -> None:
        ...
    def start(self, x: typing.Any, kind: typing.SupportsInt | typing.SupportsIndex) -> bool:
        """
        Sends the request behind sim(x) (COST), value_and_grad (GRADIENT) or residuals (RESIDUALS); False when nothing was sent (the slow path decides).
        """
    def start_batch(self, xs: numpy.ndarray, kind: typing.SupportsInt | typing.SupportsIndex) -> bool:
        """
        As start() for the rows of xs, shape (count, n_params), in one request; False when nothing was sent.
        """
    def wait(self) -> bool:
        ...
    def wait_declaration(self, slice_seconds: typing.SupportsFloat | typing.SupportsIndex) -> typing.Any:
        ...
    @property
    def answers(self) -> int:
        ...
    @property
    def elapsed(self) -> float:
        ...
    @property
    def last_error(self) -> str:
        ...
    @property
    def latency(self) -> tuple[float, float]:
        """
        (request, reply) latency in seconds of the latest answered request; NaN where not measured.
        """
    @property
    def max_batch(self) -> int:
        ...
    @property
    def outcome(self) -> DriverPort.Outcome:
        ...
    @property
    def seq(self) -> int:
        ...
    @property
    def spin_holding_gil(self) -> bool:
        """
        Whether a wait spins with the GIL held (default); False for a port that threads share.
        """
    @spin_holding_gil.setter
    def spin_holding_gil(self, arg1: bool) -> None:
        ...
    @property
    def timeout(self) -> float:
        """
        Seconds a request may wait for its reply (0: no limit); no wait slice reaches past it.
        """
    @timeout.setter
    def timeout(self, arg1: typing.SupportsFloat | typing.SupportsIndex) -> None:
        ...
class FastCall:
    """
    Base of pybridge.Simulator: evaluations go to the native port first, one at a time.
    """
    def __call__(self, *args, **kwargs):
        """
        Call self as a function.
        """
    def _after_fork_in_child(self):
        """
        Forgets the lock and the port after fork().
        """
    def _locked(self, function):
        """
        Calls function() holding the evaluation lock.
        """
    def _set_fallbacks(self, cost, value_and_grad, residuals):
        """
        Functions f(self, x) called when the port declines.
        """
    def _use_fast_port(self, port):
        """
        Route evaluations to this DriverPort (None: always the fallbacks).
        """
    def residuals(self, x):
        """
        The residual vector at x, for scipy.optimize.least_squares. A fresh array.
        """
    def value_and_grad(self, x):
        """
        (cost, gradient) at x, for scipy.optimize.minimize(..., jac=True).
        
        The gradient is a fresh array: the next evaluation does not overwrite it.
        """
class Recorder:
    """
    Recorder(simulator, n, offset, width, lower, upper, scaled, on_due, on_failure, fallback)
    
    A calibration's cost function on one Simulator, with its records kept in columns (pybridge/optimize/calibration.py).
    """
    @staticmethod
    def __new__(type, *args, **kwargs):
        """
        Create and return a new object.  See help(type) for accurate signature.
        """
    def __call__(self, *args, **kwargs):
        """
        Call self as a function.
        """
    def callback(self, intermediate_result):
        """
        SciPy's per-iteration callback (an OptimizeResult, or the point alone).
        """
    def grant(self, left, batch, wanted):
        """
        Of the evaluations a budget has left (None: no budget), less those started here and not yet taken, gives `wanted` to the caller (returns how many) and at most `batch` to the countdown.
        """
    def iteration(self, z, cost):
        """
        The SciPy method finished an iteration at solver vector z (cost NaN if unknown).
        """
    def take(self):
        """
        (x, cost, started, finished, iteration_after, iteration_x, iteration_cost, iteration_time): the pending rows, as fresh arrays; forgotten here.
        """
def _set_shim_error(type: typing.Any) -> None:
    """
    The exception class raised for failed shim calls (pybridge.errors.ShimError; set at import).
    """
def driver_thread_alone() -> bool:
    """
    Whether the calling thread is this process's only driver thread (no other thread waited on a simulator within the last second): its Simulators' waits then spin with the GIL held.
    """
def header_fields() -> list[tuple[str, int, str]]:
    """
    (name, offset, numpy dtype) of every field of pybridge_header.
    """
def layout(n_params: typing.SupportsInt | typing.SupportsIndex, n_residuals: typing.SupportsInt | typing.SupportsIndex, capabilities: typing.SupportsInt | typing.SupportsIndex, max_batch: typing.SupportsInt | typing.SupportsIndex = 1) -> dict:
    """
    Region offsets and segment size for a channel of this shape (pybridge_layout_compute).
    """
def measure_latency(on: bool) -> bool:
    """
    Whether this thread's next evaluations measure their latency (the simulator stamps their replies, two clock reads on each round trip); returns the previous setting.
    """
def new_name(kind: str = '') -> str:
    """
    A fresh name for a channel (kind "") or a doorbell ("bell-"): "pybridge-" kind pid "-" 24 hex digits.
    """
def process_alive(pid: typing.SupportsInt | typing.SupportsIndex) -> bool:
    """
    True while the process runs (zombies count as dead).
    """
def residual_cost(residuals: typing.Annotated[numpy.typing.ArrayLike, numpy.float64]) -> float:
    """
    0.5 * sum(r**2), computed exactly as the fast path computes it.
    """
def take_latency() -> tuple[float, float]:
    """
    (request, reply) latency in seconds of this thread's latest evaluation through a Simulator's call, value_and_grad or residuals, NaN where not measured; then forgotten.
    """
def unlink_segment(name: str) -> None:
    """
    Remove the shared-memory object /name (already gone is fine).
    """
def validate_header(segment: typing_extensions.Buffer) -> str | None:
    """
    None if the buffer starts with a valid header, else the reason (pybridge_header_validate).
    """
def wait_any(ports: collections.abc.Sequence[DriverPort], slice_seconds: typing.SupportsFloat | typing.SupportsIndex) -> int | None:
    """
    Index of the first of these ports (sharing a doorbell) with its reply, or None after the slice.
    """
CAPABILITIES: dict = {'GRADIENT': 1, 'RESIDUALS': 2}
CHANNEL_ENV: str = 'PYBRIDGE_CHANNEL'
CHANNEL_NAME_MAX: int = 59
ERROR_TEXT_SIZE: int = 640
HEADER_SIZE: int = 1024
LIVENESS_PERIOD_MS: int = 100
MAGIC: int = 4992033793666865488
NAME_PREFIX: str = 'pybridge-'
PROTOCOL_VERSION: int = 4
REGION_ALIGN: int = 64
REPLY_SEM_SUFFIX: str = '-rep'
REPLY_STATUSES: dict = {'OK': 0, 'FAILED': 1}
REQUEST_KINDS: dict = {'COST': 1, 'GRADIENT': 2, 'RESIDUALS': 3}
REQUEST_SEM_SUFFIX: str = '-req'
SEMAPHORE_NAME_SIZE: int = 64
STATES: dict = {'CREATED': 1, 'DECLARED': 2, 'READY': 3, 'REJECTED': 4, 'CLOSED': 5}
STATUS_CODES: dict = {'OK': 0, 'CLOSED': 1, 'TIMEOUT': 2, 'E_INVALID_ARGUMENT': -1, 'E_NO_CHANNEL': -2, 'E_SYSTEM': -3, 'E_PROTOCOL': -4, 'E_REJECTED': -5, 'E_DRIVER_GONE': -6, 'E_TAKEN': -7, 'E_NO_SPACE': -8}
__version__: str = '0.2.0'
