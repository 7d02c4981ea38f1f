// DriverPort: the shim's driver end for Python. Header-only so that FastCall
// (fast_call.cpp) calls its fast paths inline.
#pragma once

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <optional>
#include <string>

#include <pybind11/eval.h>
#include <frameobject.h>  // after Python.h (pybind11's); 3.9-3.10 read the frame's fields

#include "../src/values.hpp"
#include "../src/wait.hpp"
#include "bindings.hpp"
#include "pybridge/driver.h"

namespace pybridge::python {

// Seconds as the C API's nanoseconds: 0 for none (or NaN), saturated for "no limit" (a cast of
// more than INT64_MAX nanoseconds would be undefined; the C API caps what it gets).
inline int64_t nanoseconds(double seconds) {
    if (!(seconds > 0)) return 0;
    return seconds < 9.2e9 ? static_cast<int64_t>(seconds * 1e9) : INT64_MAX;
}

// Driver threads: the threads of this process that wait on simulators. A wait spins for its reply
// with the GIL held only while its thread is the only one (a fast reply costs less than letting the
// GIL go and taking it back). While other threads wait on simulators too, a spin holding the GIL kept
// them from even sending their requests, and two threads with a Simulator each took turns instead of
// overlapping (benchmarks/threads.py: 0.8-1.0x one thread's time per evaluation at 50 and 200 us,
// where half is ideal). "The only one": no other thread waited within the last kSharedForNs. A thread
// that runs Python but waits on no simulator (a GUI, tqdm's monitor) changes nothing: the driver keeps
// the GIL through its spin, as before. Both fields are atomics rather than guarded by the GIL, so
// that the rule needs no lock of its own in a build without one (free-threaded Python).
class DriverThreads {
public:
    static constexpr int64_t kSharedForNs = 1'000'000'000;

    // Notes a wait of the calling thread; whether it is the only driver thread.
    static bool note_wait() noexcept { return alone(true); }
    // Whether the calling thread is the only driver thread, noting nothing.
    static bool alone_now() noexcept { return alone(false); }

private:
    static bool alone(bool note) noexcept {
        const unsigned long me = PyThread_get_thread_ident();
        const unsigned long last = last_.load(std::memory_order_relaxed);
        if (last != me && last != 0) {  // another thread waited last
            if (note) {
                last_.store(me, std::memory_order_relaxed);
                shared_until_ns_.store(detail::monotonic_ns(detail::Clock::now()) + kSharedForNs,
                                       std::memory_order_relaxed);
            }
            return false;
        }
        if (last == 0 && note) last_.store(me, std::memory_order_relaxed);
        const int64_t until = shared_until_ns_.load(std::memory_order_relaxed);
        return until == 0 || detail::monotonic_ns(detail::Clock::now()) >= until;  // the clock only once shared
    }

    static inline std::atomic<unsigned long> last_{0};  // the thread that waited last (0: none yet)
    static inline std::atomic<int64_t> shared_until_ns_{0};  // monotonic; 0: never shared
};

// DriverPort: pybridge_driver (pybridge/driver.h) for Python. DriverChannel
// (pybridge/core/channel.py) owns the OS objects; this class runs the
// protocol over them through the shim's C driver API — the same calls a C
// driver makes. Its fast calls (cost, value_and_grad, residuals) return the
// answer, or None whenever Python must take over: a parameter vector that is
// not a contiguous float64 array of the right length, a value that is not
// finite, or a request the channel cannot serve (nothing sent, and
// last_error says why), a reply still pending after one wait slice, or a
// failed or non-finite reply. `outcome` then tells the slow path where the
// request stands.
class DriverPort {
public:
    enum Outcome : int {};  // pybridge_outcome, as a Python enum

    DriverPort(const std::string &name, const std::optional<std::string> &doorbell, double poll_seconds)
        : poll_(std::chrono::nanoseconds(nanoseconds(poll_seconds))) {
        const int status = pybridge_driver_open(name.c_str(), doorbell ? doorbell->c_str() : nullptr, &d_);
        if (status != PYBRIDGE_OK) {
            const std::string message = pybridge_driver_last_error(d_);
            pybridge_driver_close(d_);
            d_ = nullptr;
            raise_shim_error(status, message);
        }
    }
    ~DriverPort() { release(); }
    DriverPort(const DriverPort &) = delete;
    DriverPort &operator=(const DriverPort &) = delete;

    // Whether wait() spins with the GIL held (the default: a fast reply costs less than letting it go).
    bool spin_holding_gil() const { return spin_holding_gil_; }
    void set_spin_holding_gil(bool value) { spin_holding_gil_ = value; }

    // Lets go of the driver's end (its mapping and semaphores); removes nothing.
    void release() {
        pybridge_driver_close(d_);
        d_ = nullptr;
    }

    // (n_params, n_residuals, capabilities, max_batch, simulator_pid) once declared, None when the slice ran out.
    py::object wait_declaration(double slice_seconds) {
        pybridge_declaration declaration{};
        int32_t pid = 0;
        int status;
        {
            py::gil_scoped_release release;
            status = pybridge_driver_wait_declaration(open(), nanoseconds(slice_seconds), &declaration, &pid);
        }
        if (status == PYBRIDGE_TIMEOUT) return py::none();
        check(status);
        return py::make_tuple(declaration.n_params, declaration.n_residuals, declaration.capabilities,
                              declaration.max_batch, pid);
    }
    void reject(const std::string &reason) { check(pybridge_driver_reject(open(), reason.c_str())); }
    void accept(uint32_t n_params, uint32_t n_residuals, uint32_t capabilities, uint32_t max_batch, uint32_t spin_us,
                bool forecast) {
        check(pybridge_driver_accept(open(), n_params, n_residuals, capabilities, max_batch, spin_us));
        check(pybridge_driver_set_forecast(open(), forecast ? 1 : 0));
        pybridge_driver_shape(d_, &n_params_, &n_residuals_, &capabilities_, &max_batch_);
        params_ = pybridge_driver_params(d_);
    }
    void shutdown() { check(pybridge_driver_shutdown(open())); }

    bool serves(uint32_t kind) const {
        return kind == PYBRIDGE_REQUEST_COST || (kind == PYBRIDGE_REQUEST_GRADIENT && (capabilities_ & PYBRIDGE_CAP_GRADIENT)) ||
               (kind == PYBRIDGE_REQUEST_RESIDUALS && (capabilities_ & PYBRIDGE_CAP_RESIDUALS));
    }

    // Sends a request for x. False (nothing sent) unless x is a contiguous, native float64 vector of
    // n_params finite values and the channel serves `kind`; last_error then says why, where the C API
    // decided. The finiteness check is the C API's: one rule for both paths.
    bool send(py::handle x, uint32_t kind) {
        outcome_ = PYBRIDGE_OUTCOME_NOT_SENT;
        if (d_ == nullptr || params_ == nullptr) return false;
        const double *values = float64_values(x, static_cast<py::ssize_t>(n_params_));
        if (values == nullptr) return false;
        follow_measuring();
        if (pybridge_driver_send(d_, kind, values) != PYBRIDGE_OK) return false;
        outcome_ = PYBRIDGE_OUTCOME_PENDING;
        return true;
    }

    // Waits up to one poll slice for the reply: spinning with the GIL held
    // (a fast reply costs less than releasing it), then blocking without it.
    // The C driver spins once per request; later slices only look, then block.
    // With a timeout, no slice reaches past it: the caller sees the deadline
    // within a timer's wake-up of it, not a poll period later.
    //
    // A forecast wait (evaluations of milliseconds) is cut in two where its
    // spin window opens, and the interpreter runs once there (warm_up) before
    // the spin. Whatever runs first after a reply is slow when it last ran
    // milliseconds before, while the vCPU was halted or the host's other work
    // had the caches; running the interpreter just before the reply halved
    // the time a 5 ms evaluation's caught reply took to reach the caller
    // (docs/performance-log.md). Running Python code there also runs any signal
    // handler due: an exception it raises leaves the request pending, as one
    // raised in the slow path's own wait does. Each part blocks for up to a
    // slice, so such a call may take two (the peer is then checked up to two
    // poll periods apart): one slice for both put evaluations of about a poll
    // period (20 ms) on the slow path, 83 against 72 us added, 8 pairs.
    bool wait() {
        if (outcome_ != PYBRIDGE_OUTCOME_PENDING) return outcome_ == PYBRIDGE_OUTCOME_ANSWERED;
        // Spins (first slice only), never blocks: GIL held. Not for a port that threads share (a
        // pool's worker): a spin of the budget with the GIL held keeps the other threads from even
        // sending, and they took turns (benchmarks/threads.py); its spin comes below, GIL released.
        // While other threads wait on simulators of their own (DriverThreads), for kSharedSpinNs only:
        // a fast reply is still caught without handing the GIL over, a slower one lets them run.
        const bool alone = DriverThreads::note_wait();
        int status = PYBRIDGE_TIMEOUT;
        if (spin_holding_gil_) status = alone ? pybridge_driver_wait(d_, 0) : pybridge_driver_spin(d_, kSharedSpinNs);
        if (status == PYBRIDGE_TIMEOUT && pybridge_driver_window_in_ns(d_) > 0) {
            {
                py::gil_scoped_release release;
                status = pybridge_driver_wait_until_window(d_, slice());
            }
            if (status == PYBRIDGE_TIMEOUT) {
                if (pybridge_driver_window_in_ns(d_) > 0) return false;  // the slice ran out (or a signal came)
                warm_up();
            }
        }
        if (status == PYBRIDGE_TIMEOUT) {
            py::gil_scoped_release release;
            status = pybridge_driver_wait(d_, slice());
        }
        if (status != PYBRIDGE_OK) return false;
        outcome_ = PYBRIDGE_OUTCOME_ANSWERED;
        pybridge_driver_reply(d_, &reply_);
        return true;
    }

    // (reply_status, cost, error text) of the answered request.
    py::tuple reply() const {
        if (outcome_ != PYBRIDGE_OUTCOME_ANSWERED) throw py::value_error("no answered request");
        return py::make_tuple(reply_.status, reply_.cost, std::string(reply_.error));
    }

    // The fast calls: one request, its reply, the value — or None for the slow path.
    py::object cost(py::handle x) { return start(x, PYBRIDGE_REQUEST_COST) ? finish(PYBRIDGE_REQUEST_COST) : py::none(); }
    py::object value_and_grad(py::handle x) {
        return start(x, PYBRIDGE_REQUEST_GRADIENT) ? finish(PYBRIDGE_REQUEST_GRADIENT) : py::none();
    }
    py::object residuals(py::handle x) {
        return start(x, PYBRIDGE_REQUEST_RESIDUALS) ? finish(PYBRIDGE_REQUEST_RESIDUALS) : py::none();
    }

    // A batch: start(x, kind) for the rows of xs, a C-contiguous float64 array of shape (count, n_params),
    // 1 <= count <= max_batch. Off the hot path: pybind11's own checks will do.
    bool start_batch(const py::array &xs, uint32_t kind) {
        outcome_ = PYBRIDGE_OUTCOME_NOT_SENT;
        if (d_ == nullptr || params_ == nullptr) return false;
        const auto rows = py::array_t<double, py::array::c_style>::ensure(xs);
        if (!rows || rows.ndim() != 2 || rows.shape(1) != static_cast<py::ssize_t>(n_params_) || rows.shape(0) < 1) {
            return false;
        }
        const bool residual_cost = kind == PYBRIDGE_REQUEST_COST && (capabilities_ & PYBRIDGE_CAP_RESIDUALS);
        follow_measuring();
        if (pybridge_driver_send_batch(d_, residual_cost ? PYBRIDGE_REQUEST_RESIDUALS : kind,
                                       static_cast<uint32_t>(rows.shape(0)), rows.data()) != PYBRIDGE_OK) {
            return false;
        }
        outcome_ = PYBRIDGE_OUTCOME_PENDING;
        return true;
    }

    // The values of the answered batch as arrays, whatever they are (the caller judges each vector):
    // costs of shape (count,) for COST (0.5 * sum(r^2) per row for a residual simulator), (costs,
    // gradients of shape (count, n_params)) for GRADIENT, residuals of shape (count, n_residuals) for
    // RESIDUALS. None while the reply is pending or when it reports a failure (see reply()).
    py::object batch_values(uint32_t kind) const {
        if (outcome_ != PYBRIDGE_OUTCOME_ANSWERED || !reply_ok()) return py::none();
        const py::ssize_t count = reply_.count;
        switch (kind) {
            case PYBRIDGE_REQUEST_COST: {
                py::array_t<double> costs(count);
                double *out = costs.mutable_data();
                for (py::ssize_t i = 0; i < count; ++i) {
                    out[i] = (capabilities_ & PYBRIDGE_CAP_RESIDUALS)
                                 ? pybridge::detail::half_sum_of_squares(reply_.residuals + i * n_residuals_, n_residuals_)
                                 : reply_.costs[i];
                }
                return std::move(costs);
            }
            case PYBRIDGE_REQUEST_GRADIENT:
                return py::make_tuple(copy_of(reply_.costs, count, 1), copy_of(reply_.gradient, count, n_params_));
            case PYBRIDGE_REQUEST_RESIDUALS:
                return copy_of(reply_.residuals, count, n_residuals_);
            default:
                throw py::value_error("unknown request kind");
        }
    }

    // A request for what sim(x) (COST), sim.value_and_grad(x) (GRADIENT) or
    // sim.residuals(x) (RESIDUALS) returns, without waiting: the cost of a
    // residual simulator is asked for as its residuals. A pool starts one
    // request per simulator, waits on all of them at once (wait_any), then
    // finishes each. False (nothing sent) as for send.
    bool start(py::handle x, uint32_t kind) {
        const bool residual_cost = kind == PYBRIDGE_REQUEST_COST && (capabilities_ & PYBRIDGE_CAP_RESIDUALS);
        return send(x, residual_cost ? PYBRIDGE_REQUEST_RESIDUALS : kind);
    }

    // The value of the request `start(x, kind)` sent, after at most one wait
    // slice: a float (COST), (cost, gradient copy) (GRADIENT) or a residual
    // copy (RESIDUALS); None when the reply is still pending, reports a
    // failure or is not finite (the slow path takes over from `outcome`).
    py::object finish(uint32_t kind) {
        if (!wait() || !reply_ok()) return py::none();
        switch (kind) {
            case PYBRIDGE_REQUEST_COST: {
                const bool residual = capabilities_ & PYBRIDGE_CAP_RESIDUALS;
                const double value =
                    residual ? pybridge::detail::half_sum_of_squares(reply_.residuals, n_residuals_) : reply_.cost;
                if (!allow_nonfinite_ && !std::isfinite(value)) return py::none();
                ++answers_;
                return py::float_(value);
            }
            case PYBRIDGE_REQUEST_GRADIENT: {
                const double value = reply_.cost;
                if (!allow_nonfinite_ &&
                    (!std::isfinite(value) || !pybridge::detail::finite_values(reply_.gradient, n_params_))) {
                    return py::none();
                }
                ++answers_;
                return py::make_tuple(value, copy_of(reply_.gradient, n_params_));
            }
            case PYBRIDGE_REQUEST_RESIDUALS:
                if (!allow_nonfinite_ && !pybridge::detail::finite_values(reply_.residuals, n_residuals_)) {
                    return py::none();
                }
                ++answers_;
                return copy_of(reply_.residuals, n_residuals_);
            default:
                throw py::value_error("unknown request kind");
        }
    }

    // Waits up to one slice for the batch start_batch sent; its values as batch_values gives them.
    py::object finish_batch(uint32_t kind) { return wait() ? batch_values(kind) : py::none(); }

    int outcome() const { return outcome_; }
    uint32_t max_batch() const { return max_batch_; }
    uint64_t answers() const { return answers_; }
    uint64_t seq() const { return pybridge_driver_seq(d_); }
    std::string last_error() const { return pybridge_driver_last_error(d_); }
    pybridge_driver *handle() const { return d_; }
    double elapsed() const { return 1e-9 * static_cast<double>(pybridge_driver_elapsed_ns(d_)); }
    // The latest answered request's latency; NaN while none is answered or the simulator did not stamp.
    Latency latency() const {
        int64_t request = -1, reply = -1;
        if (d_ == nullptr || pybridge_driver_latency(d_, &request, &reply) != PYBRIDGE_OK || request < 0) return {};
        return {1e-9 * static_cast<double>(request), 1e-9 * static_cast<double>(reply)};
    }
    double timeout() const { return std::chrono::duration<double>(timeout_).count(); }
    void set_timeout(double seconds) { timeout_ = std::chrono::nanoseconds(nanoseconds(seconds)); }
    bool allow_nonfinite_ = false;

private:
    // Times the next request if the sending thread measures latency (measuring_latency).
    void follow_measuring() {
        if (measuring_ != measuring_latency) {
            measuring_ = measuring_latency;
            pybridge_driver_measure_latency(d_, measuring_ ? 1 : 0);
        }
    }
    pybridge_driver *open() const {
        if (d_ == nullptr) throw py::value_error("the driver port was released");
        return d_;
    }
    void check(int status) const {
        if (status != PYBRIDGE_OK) raise_shim_error(status, pybridge_driver_last_error(d_));
    }
    bool reply_ok() const { return reply_.status == PYBRIDGE_REPLY_OK; }
    static py::array_t<double> copy_of(const double *values, uint32_t count) {
        py::array_t<double> out(count);
        std::memcpy(out.mutable_data(), values, count * sizeof(double));
        return out;
    }
    // Nanoseconds the next wait may block: a poll slice, cut at the timeout.
    int64_t slice() const {
        std::chrono::nanoseconds slice = poll_;
        if (timeout_.count() > 0) {
            const auto left = timeout_ - std::chrono::nanoseconds(pybridge_driver_elapsed_ns(d_));
            slice = std::min(slice, left);
        }
        return std::max<int64_t>(slice.count(), 0);
    }

    // Runs the interpreter once: a Python function that does nothing (made once, never freed: the
    // interpreter may be finalizing when static destructors run), then reads through the data the
    // caller's next lines will use (read_caller). A C function called instead of the Python one (the
    // binding's own call path, a float made) did not help: it is the interpreter's own loop that
    // the caller's code, after the reply, needs warm, and then its frame's data.
    static void warm_up() {
        static PyObject *nothing = [] {
            py::dict scope;
            py::exec("def pybridge_warm_up():\n    pass\n", scope);
            return py::object(scope["pybridge_warm_up"]).release().ptr();
        }();
        PyObject *result = PyObject_CallNoArgs(nothing);
        if (result == nullptr) throw py::error_already_set();
        Py_DECREF(result);
        read_caller();
    }

    // Reads the calling Python frame's globals and builtins (each entry's key, value and their types)
    // and its bytecode, as the caller's code after the reply will: with only the empty function run
    // before the reply, getting from the reply back into the caller's next line took 10-16 us at
    // 5 ms, against 4-6 for a caller whose own code ran ~500 us before (docs/performance-log.md).
    // Nothing is written and no reference is kept; no frame (a call from C) reads nothing. At most
    // kReadEntries of each dict (the first ones: imports and definitions come first in a module), so
    // that a notebook with thousands of names does not spend the window reading them.
    static constexpr Py_ssize_t kReadEntries = 512;
    static void read_caller() {
        PyFrameObject *frame = PyEval_GetFrame();  // borrowed
        if (frame == nullptr) return;
        PyCodeObject *code = PyFrame_GetCode(frame);
#if PY_VERSION_HEX >= 0x030B0000
        PyObject *globals = PyFrame_GetGlobals(frame);
        PyObject *builtins = PyFrame_GetBuiltins(frame);
        PyObject *bytecode = PyCode_GetCode(code);
#else
        PyObject *globals = frame->f_globals, *builtins = frame->f_builtins, *bytecode = code->co_code;
        Py_XINCREF(globals);
        Py_XINCREF(builtins);
        Py_XINCREF(bytecode);
#endif
        size_t sum = read_dict(globals) + read_dict(builtins);
        if (bytecode != nullptr && PyBytes_Check(bytecode)) {
            const char *bytes = PyBytes_AS_STRING(bytecode);
            for (Py_ssize_t at = 0; at < PyBytes_GET_SIZE(bytecode); at += 64) sum += static_cast<size_t>(bytes[at]);
        }
        Py_XDECREF(bytecode);
        Py_XDECREF(builtins);
        Py_XDECREF(globals);
        Py_DECREF(code);
        static volatile size_t sink;  // so that the reads are not optimised away
        sink = sum;
    }
    static size_t read_dict(PyObject *dict) {
        if (dict == nullptr || !PyDict_Check(dict)) return 0;
        size_t sum = 0;
        Py_ssize_t at = 0;
        PyObject *key, *value;
        for (Py_ssize_t read = 0; read < kReadEntries && PyDict_Next(dict, &at, &key, &value); ++read) {
            sum += Py_TYPE(key)->tp_flags + Py_TYPE(value)->tp_flags + static_cast<size_t>(Py_REFCNT(value));
        }
        return sum;
    }

    // rows x columns values (a batch's gradients or residuals); columns == 1 gives a vector.
    static py::array_t<double> copy_of(const double *values, py::ssize_t rows, py::ssize_t columns) {
        py::array_t<double> out = columns == 1 ? py::array_t<double>(rows) : py::array_t<double>({rows, columns});
        std::memcpy(out.mutable_data(), values, static_cast<size_t>(rows * columns) * sizeof(double));
        return out;
    }

    // How long a wait spins with the GIL held while other threads wait on simulators too: a reply of a
    // few microseconds is caught before the GIL changes hands (which cost two threads with trivial
    // evaluations 1.4-3.3 us per evaluation against ~1 held), a longer one lets the others run.
    static constexpr int64_t kSharedSpinNs = 10'000;
    bool spin_holding_gil_ = true;
    pybridge_driver *d_ = nullptr;
    std::chrono::nanoseconds poll_;
    std::chrono::nanoseconds timeout_{0};  // 0: none
    uint32_t n_params_ = 0, n_residuals_ = 0, capabilities_ = 0, max_batch_ = 1;
    double *params_ = nullptr;
    // Kept here, not read from the C driver: an array refused before the C call (wrong dtype or length)
    // leaves the C driver's outcome at the previous request, which the slow path must not resume.
    int outcome_ = PYBRIDGE_OUTCOME_NOT_SENT;
    pybridge_reply reply_{};
    uint64_t answers_ = 0;  // evaluations answered by the fast calls
    bool measuring_ = false;  // what the driver was last told (pybridge_driver_measure_latency)
};


}  // namespace pybridge::python
