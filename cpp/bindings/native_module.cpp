// pybridge._native: the compiled half of the Python package.
//
//  * the protocol constants and the header's field table, taken from
//    pybridge/protocol.h by the compiler, so Python never restates them;
//  * the layout computation and header validation of the shim;
//  * the shim's simulator end (pybridge_channel_*), so a simulator can be
//    written in Python over exactly the same code path as a C one;
//  * DriverPort, the driver's hot path: one call validates and copies the
//    parameters, sends the request, spin-waits for the reply and returns it;
//  * small OS helpers the driver needs (growing a segment, peer liveness).

#include <fcntl.h>
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstddef>
#include <cstring>
#include <condition_variable>
#include <mutex>
#include <optional>
#include <string>
#include <tuple>
#include <vector>

#include <semaphore.h>

#include "../src/process.hpp"
#include "../src/values.hpp"
#include "../src/wait.hpp"
#include "pybridge/driver.h"
#include "pybridge/pybridge.h"

namespace py = pybind11;

namespace {

// The exception class for failed shim calls. It lives in pybridge/errors.py with the rest of the
// hierarchy, and pybridge hands it over at import (_set_shim_error): no lookup by name from C++.
PyObject *shim_error_type = PyExc_RuntimeError;

[[noreturn]] void raise_shim_error(int code, const std::string &message) {
    PyErr_SetObject(shim_error_type, py::make_tuple(message, code).ptr());
    throw py::error_already_set();
}

void set_shim_error(py::object type) {
    if (!PyType_Check(type.ptr()) || !PyType_IsSubtype(reinterpret_cast<PyTypeObject *>(type.ptr()),
                                                       reinterpret_cast<PyTypeObject *>(PyExc_Exception))) {
        throw py::type_error("_set_shim_error takes an exception class");
    }
    Py_INCREF(type.ptr());  // kept for the life of the process
    shim_error_type = type.ptr();
}

// (name, offset, numpy dtype string) for every field of pybridge_header.
std::vector<std::tuple<std::string, size_t, std::string>> header_fields() {
    std::vector<std::tuple<std::string, size_t, std::string>> fields;
#define PYBRIDGE_FIELD(member)                                                                         \
    fields.emplace_back(#member, offsetof(pybridge_header, member),                                   \
                        py::str(py::dtype::of<decltype(pybridge_header::member)>()).cast<std::string>())
    PYBRIDGE_FIELD(magic);
    PYBRIDGE_FIELD(version);
    PYBRIDGE_FIELD(header_size);
    PYBRIDGE_FIELD(segment_size);
    PYBRIDGE_FIELD(driver_pid);
    PYBRIDGE_FIELD(simulator_pid);
    PYBRIDGE_FIELD(state);
    PYBRIDGE_FIELD(declared_n_params);
    PYBRIDGE_FIELD(declared_n_residuals);
    PYBRIDGE_FIELD(declared_capabilities);
    PYBRIDGE_FIELD(n_params);
    PYBRIDGE_FIELD(n_residuals);
    PYBRIDGE_FIELD(capabilities);
    PYBRIDGE_FIELD(spin_us);
    PYBRIDGE_FIELD(params_offset);
    PYBRIDGE_FIELD(gradient_offset);
    PYBRIDGE_FIELD(residuals_offset);
    PYBRIDGE_FIELD(request_seq);
    PYBRIDGE_FIELD(request_kind);
    PYBRIDGE_FIELD(driver_sleeping);
    PYBRIDGE_FIELD(reply_seq);
    PYBRIDGE_FIELD(reply_status);
    PYBRIDGE_FIELD(simulator_sleeping);
    PYBRIDGE_FIELD(cost);
#undef PYBRIDGE_FIELD
    fields.emplace_back("reply_semaphore", offsetof(pybridge_header, reply_semaphore),
                        "S" + std::to_string(PYBRIDGE_SEMAPHORE_NAME_SIZE));
    fields.emplace_back("error", offsetof(pybridge_header, error), "S" + std::to_string(PYBRIDGE_ERROR_TEXT_SIZE));
    return fields;
}

// The simulator end of a channel, for simulators written in Python. Numpy
// views handed out keep this object alive, and the mapping is released only
// when the last of them is gone, so a view can never dangle.
class PyChannel {
public:
    PyChannel(std::optional<std::string> name, uint32_t n_params, uint32_t n_residuals, uint32_t capabilities) {
        const pybridge_declaration declaration{n_params, n_residuals, capabilities};
        int status;
        {
            py::gil_scoped_release release;  // the handshake blocks until the driver answers
            status = pybridge_channel_open(name ? name->c_str() : nullptr, &declaration, &handle_);
        }
        if (status != PYBRIDGE_OK) {
            const std::string message = pybridge_channel_last_error(handle_);
            pybridge_channel_close(handle_);
            handle_ = nullptr;
            raise_shim_error(status, message);
        }
    }
    ~PyChannel() { pybridge_channel_close(handle_); }
    PyChannel(const PyChannel &) = delete;
    PyChannel &operator=(const PyChannel &) = delete;

    // Returns (seq, kind, params, gradient or None, residuals or None), or None once closed.
    py::object wait(py::object self) {
        pybridge_request request{};
        int status;
        {
            py::gil_scoped_release release;
            status = pybridge_channel_wait(handle_, &request);
        }
        if (status == PYBRIDGE_CLOSED) return py::none();
        check(status);
        py::array_t<double> params({static_cast<py::ssize_t>(request.n_params)}, {sizeof(double)}, request.params,
                                   self);
        py::detail::array_proxy(params.ptr())->flags &= ~py::detail::npy_api::NPY_ARRAY_WRITEABLE_;
        py::object gradient = py::none();
        if (request.gradient != nullptr) {
            gradient = py::array_t<double>({static_cast<py::ssize_t>(request.n_params)}, {sizeof(double)},
                                           request.gradient, self);
        }
        py::object residuals = py::none();
        if (request.residuals != nullptr) {
            residuals = py::array_t<double>({static_cast<py::ssize_t>(request.n_residuals)}, {sizeof(double)},
                                            request.residuals, self);
        }
        return py::make_tuple(request.seq, request.kind, params, gradient, residuals);
    }

    void reply(double cost) { check(pybridge_channel_reply(handle_, cost)); }
    void reply_residuals() { check(pybridge_channel_reply_residuals(handle_)); }
    void reply_error(const std::string &message) { check(pybridge_channel_reply_error(handle_, message.c_str())); }
    bool driver_alive() const { return pybridge_channel_driver_alive(handle_) == PYBRIDGE_OK; }
    void set_watchdog(bool enabled) { check(pybridge_channel_set_watchdog(handle_, enabled ? 1 : 0)); }
    std::string name() const { return pybridge_channel_name(handle_); }

private:
    void check(int status) const {
        if (status != PYBRIDGE_OK) raise_shim_error(status, pybridge_channel_last_error(handle_));
    }
    pybridge_channel *handle_ = nullptr;
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

    DriverPort(const std::string &name, const std::string &reply_semaphore, double poll_seconds)
        : poll_(std::chrono::nanoseconds(static_cast<int64_t>(poll_seconds * 1e9))) {
        const int status = pybridge_driver_open(name.c_str(), reply_semaphore.c_str(), &d_);
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

    // Lets go of the driver's end (its mapping and semaphores); removes nothing.
    void release() {
        pybridge_driver_close(d_);
        d_ = nullptr;
    }

    // (n_params, n_residuals, capabilities, simulator_pid) once declared, None when the slice ran out.
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
        return py::make_tuple(declaration.n_params, declaration.n_residuals, declaration.capabilities, pid);
    }
    void reject(const std::string &reason) { check(pybridge_driver_reject(open(), reason.c_str())); }
    void accept(uint32_t n_params, uint32_t n_residuals, uint32_t capabilities, uint32_t spin_us) {
        check(pybridge_driver_accept(open(), n_params, n_residuals, capabilities, spin_us));
        pybridge_driver_shape(d_, &n_params_, &n_residuals_, &capabilities_);
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
        if (d_ == nullptr || params_ == nullptr || !py::isinstance<py::array>(x)) return false;
        auto *array = py::detail::array_proxy(x.ptr());
        const auto *descr = py::detail::array_descriptor_proxy(array->descr);
        constexpr int needed = py::detail::npy_api::NPY_ARRAY_C_CONTIGUOUS_ | py::detail::npy_api::NPY_ARRAY_ALIGNED_;
        if (descr->type_num != py::detail::npy_api::NPY_DOUBLE_ || descr->byteorder == '>' || array->nd != 1 ||
            array->dimensions[0] != static_cast<py::ssize_t>(n_params_) || (array->flags & needed) != needed) {
            return false;
        }
        if (pybridge_driver_send(d_, kind, reinterpret_cast<const double *>(array->data)) != PYBRIDGE_OK) return false;
        outcome_ = PYBRIDGE_OUTCOME_PENDING;
        spun_ = false;
        return true;
    }

    // Waits up to one poll slice for the reply: spinning with the GIL held
    // (a fast reply costs less than releasing it), then blocking without it.
    // With a timeout, no slice reaches past it: the caller sees the deadline
    // within a timer's wake-up of it, not a poll period later.
    bool wait() {
        if (outcome_ != PYBRIDGE_OUTCOME_PENDING) return outcome_ == PYBRIDGE_OUTCOME_ANSWERED;
        int status = spun_ ? PYBRIDGE_TIMEOUT : pybridge_driver_wait(d_, 0);  // the one spin, GIL held
        spun_ = true;
        if (status == PYBRIDGE_TIMEOUT) {
            std::chrono::nanoseconds slice = poll_;
            if (timeout_.count() > 0) {
                const auto left = timeout_ - std::chrono::nanoseconds(pybridge_driver_elapsed_ns(d_));
                slice = std::max(std::chrono::nanoseconds(0), std::min(slice, left));
            }
            py::gil_scoped_release release;
            status = pybridge_driver_wait(d_, std::max<int64_t>(slice.count(), 0));
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

    py::object cost(py::handle x) {
        const bool residual = capabilities_ & PYBRIDGE_CAP_RESIDUALS;
        if (!send(x, residual ? PYBRIDGE_REQUEST_RESIDUALS : PYBRIDGE_REQUEST_COST) || !wait() || !reply_ok()) {
            return py::none();
        }
        const double value = residual ? pybridge::detail::half_sum_of_squares(reply_.residuals, n_residuals_) : reply_.cost;
        if (!allow_nonfinite_ && !std::isfinite(value)) return py::none();
        ++answers_;
        return py::float_(value);
    }

    py::object value_and_grad(py::handle x) {
        if (!send(x, PYBRIDGE_REQUEST_GRADIENT) || !wait() || !reply_ok()) return py::none();
        const double value = reply_.cost;
        if (!allow_nonfinite_ && (!std::isfinite(value) || !pybridge::detail::finite_values(reply_.gradient, n_params_))) {
            return py::none();
        }
        ++answers_;
        return py::make_tuple(value, copy_of(reply_.gradient, n_params_));
    }

    py::object residuals(py::handle x) {
        if (!send(x, PYBRIDGE_REQUEST_RESIDUALS) || !wait() || !reply_ok()) return py::none();
        if (!allow_nonfinite_ && !pybridge::detail::finite_values(reply_.residuals, n_residuals_)) return py::none();
        ++answers_;
        return copy_of(reply_.residuals, n_residuals_);
    }

    int outcome() const { return outcome_; }
    uint64_t answers() const { return answers_; }
    uint64_t seq() const { return pybridge_driver_seq(d_); }
    std::string last_error() const { return pybridge_driver_last_error(d_); }
    pybridge_driver *handle() const { return d_; }
    double elapsed() const { return 1e-9 * static_cast<double>(pybridge_driver_elapsed_ns(d_)); }
    double timeout() const { return std::chrono::duration<double>(timeout_).count(); }
    void set_timeout(double seconds) { timeout_ = std::chrono::nanoseconds(nanoseconds(seconds)); }
    bool allow_nonfinite_ = false;

private:
    static int64_t nanoseconds(double seconds) { return seconds > 0 ? static_cast<int64_t>(seconds * 1e9) : 0; }
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

    pybridge_driver *d_ = nullptr;
    std::chrono::nanoseconds poll_;
    std::chrono::nanoseconds timeout_{0};  // 0: none
    uint32_t n_params_ = 0, n_residuals_ = 0, capabilities_ = 0;
    double *params_ = nullptr;
    int outcome_ = PYBRIDGE_OUTCOME_NOT_SENT;
    pybridge_reply reply_{};
    uint64_t answers_ = 0;  // evaluations answered by the fast calls
    bool spun_ = false;     // the current request had its spin already
};

// Waits until any of several ports (sharing one doorbell) has its reply, the GIL released:
// the index of the first answered one, or None when the slice ran out.
std::optional<size_t> wait_any(const std::vector<DriverPort *> &ports, double slice_seconds) {
    std::vector<pybridge_driver *> handles;
    for (DriverPort *port : ports) {
        if (port == nullptr || port->handle() == nullptr) throw py::value_error("wait_any takes open driver ports");
        handles.push_back(port->handle());
    }
    size_t ready = 0;
    int status;
    {
        py::gil_scoped_release release;
        status = pybridge_driver_wait_any(handles.data(), handles.size(),
                                          slice_seconds > 0 ? static_cast<int64_t>(slice_seconds * 1e9) : 0, &ready);
    }
    if (status == PYBRIDGE_TIMEOUT) return std::nullopt;
    if (status != PYBRIDGE_OK) raise_shim_error(status, pybridge_driver_last_error(handles.empty() ? nullptr : handles[0]));
    return ready;
}

// FastCall: the base class of pybridge.Simulator, whose evaluations are
// served straight from C. sim(x), value_and_grad(x) and residuals(x) — SciPy's
// calls, once per evaluation — run the DriverPort without a Python frame in
// between (a Python frame and pybind11's dispatcher each cost about a third of
// a round trip); anything unusual goes to the Python fallback registered with
// _set_fallbacks (no up-call by name).
//
// One evaluation at a time: every call holds the Simulator's lock from the
// request to the reply, fast path and fallback alike, so two threads sharing
// a Simulator take turns instead of reading each other's replies. The lock is
// re-entrant (the fallback may restart or reconnect). Its state is only ever
// touched with the GIL held, so taking a free lock costs two stores; a thread
// that finds it taken waits on a condition variable with the GIL released,
// checking signals every 20 ms, so it neither freezes the other threads nor
// ignores Ctrl-C.
enum Fallback { kCost = 0, kValueAndGrad = 1, kResiduals = 2, kFallbacks = 3 };

struct Waiters {  // only for threads that find the lock taken
    std::mutex mutex;
    std::condition_variable released;
    int count = 0;  // guarded by the GIL
};

struct FastCall {
    PyObject_HEAD
    PyObject *port_object;  // the DriverPort, or NULL while unconnected
    DriverPort *port;
    PyObject *fallbacks[kFallbacks];  // plain functions f(self, x), called when the port declines
    unsigned long owner;              // thread holding the lock (valid while depth > 0); GIL-guarded
    int depth;                        // 0: free
    Waiters *waiters;                 // created on first contention
};

// Takes the lock (GIL held on entry and exit). False, with an exception set,
// if a signal handler raised while waiting.
bool lock_evaluations(FastCall *fc) {
    const unsigned long me = PyThread_get_thread_ident();
    if (fc->depth > 0 && fc->owner != me) {
        if (fc->waiters == nullptr) fc->waiters = new Waiters;
        Waiters *w = fc->waiters;
        ++w->count;
        while (fc->depth > 0) {
            // Taken before the GIL is let go: the holder can only release (and notify) once we wait.
            std::unique_lock<std::mutex> guard(w->mutex);
            Py_BEGIN_ALLOW_THREADS
            w->released.wait_for(guard, std::chrono::milliseconds(20));
            guard.unlock();
            Py_END_ALLOW_THREADS
            if (fc->depth > 0 && PyErr_CheckSignals() != 0) {
                --w->count;
                return false;
            }
        }
        --w->count;
    }
    fc->owner = me;
    ++fc->depth;
    return true;
}

void unlock_evaluations(FastCall *fc) {
    if (--fc->depth > 0) return;
    fc->owner = 0;
    if (fc->waiters != nullptr && fc->waiters->count > 0) {
        std::lock_guard<std::mutex> guard(fc->waiters->mutex);
        fc->waiters->released.notify_one();
    }
}

template <py::object (DriverPort::*Method)(py::handle)>
PyObject *evaluate(PyObject *self, PyObject *x, Fallback fallback) {
    auto *fc = reinterpret_cast<FastCall *>(self);
    if (!lock_evaluations(fc)) return nullptr;
    PyObject *result = Py_None;
    Py_INCREF(result);
    if (fc->port != nullptr) {
        PyObject *keep = fc->port_object;  // the fallback may swap the port during the call
        Py_INCREF(keep);
        Py_DECREF(result);
        result = nullptr;
        try {
            result = (fc->port->*Method)(py::handle(x)).release().ptr();
        } catch (py::error_already_set &error) {
            error.restore();
        } catch (const std::exception &error) {
            PyErr_SetString(PyExc_RuntimeError, error.what());
        }
        Py_DECREF(keep);
    }
    if (result == Py_None) {
        Py_DECREF(result);
        PyObject *function = fc->fallbacks[fallback];
        if (function == nullptr) {
            PyErr_SetString(PyExc_RuntimeError, "pybridge: no fallback registered (call _set_fallbacks first)");
            result = nullptr;
        } else {
            result = PyObject_CallFunctionObjArgs(function, self, x, nullptr);
        }
    }
    unlock_evaluations(fc);
    return result;
}

PyObject *fast_call_slot(PyObject *self, PyObject *args, PyObject *kwargs) {
    if (kwargs != nullptr && PyDict_GET_SIZE(kwargs) != 0) {
        PyErr_SetString(PyExc_TypeError, "a Simulator takes one positional argument, the parameter vector x");
        return nullptr;
    }
    if (PyTuple_GET_SIZE(args) != 1) {
        PyErr_Format(PyExc_TypeError, "a Simulator takes one argument, the parameter vector x (%zd given)",
                     PyTuple_GET_SIZE(args));
        return nullptr;
    }
    return evaluate<&DriverPort::cost>(self, PyTuple_GET_ITEM(args, 0), kCost);
}

PyObject *fast_value_and_grad(PyObject *self, PyObject *x) {
    return evaluate<&DriverPort::value_and_grad>(self, x, kValueAndGrad);
}

PyObject *fast_residuals(PyObject *self, PyObject *x) { return evaluate<&DriverPort::residuals>(self, x, kResiduals); }

PyObject *fast_call_use_port(PyObject *self, PyObject *port) {
    auto *fc = reinterpret_cast<FastCall *>(self);
    DriverPort *raw = nullptr;
    if (port != Py_None) {
        try {
            raw = &py::cast<DriverPort &>(py::handle(port));
        } catch (py::cast_error &) {
            PyErr_SetString(PyExc_TypeError, "_use_fast_port takes a DriverPort or None");
            return nullptr;
        }
        Py_INCREF(port);
    }
    PyObject *old = fc->port_object;
    fc->port_object = port == Py_None ? nullptr : port;
    fc->port = raw;
    Py_XDECREF(old);
    Py_RETURN_NONE;
}

PyObject *fast_call_set_fallbacks(PyObject *self, PyObject *args) {
    auto *fc = reinterpret_cast<FastCall *>(self);
    PyObject *functions[kFallbacks];
    if (!PyArg_UnpackTuple(args, "_set_fallbacks", kFallbacks, kFallbacks, &functions[0], &functions[1],
                           &functions[2])) {
        return nullptr;
    }
    for (int i = 0; i < kFallbacks; ++i) {
        Py_INCREF(functions[i]);
        Py_XSETREF(fc->fallbacks[i], functions[i]);
    }
    Py_RETURN_NONE;
}

// Runs function() holding the evaluation lock: for what must not overlap an
// evaluation in another thread (closing, connecting).
PyObject *fast_call_locked(PyObject *self, PyObject *function) {
    auto *fc = reinterpret_cast<FastCall *>(self);
    if (!lock_evaluations(fc)) return nullptr;
    PyObject *result = PyObject_CallNoArgs(function);
    unlock_evaluations(fc);
    return result;
}

// In a child of fork(): the lock may be held by a thread that does not exist
// here, and the port belongs to the parent. Forget both (the old waiters'
// mutex is left as it is: destroying a mutex another thread held is undefined).
PyObject *fast_call_after_fork(PyObject *self, PyObject *) {
    auto *fc = reinterpret_cast<FastCall *>(self);
    fc->waiters = nullptr;
    fc->owner = 0;
    fc->depth = 0;
    fc->port = nullptr;
    Py_CLEAR(fc->port_object);
    Py_RETURN_NONE;
}

int fast_call_traverse(PyObject *self, visitproc visit, void *arg) {
    auto *fc = reinterpret_cast<FastCall *>(self);
    Py_VISIT(fc->port_object);
    for (PyObject *function : fc->fallbacks) Py_VISIT(function);
    Py_VISIT(Py_TYPE(self));
    return 0;
}

int fast_call_clear(PyObject *self) {
    auto *fc = reinterpret_cast<FastCall *>(self);
    fc->port = nullptr;
    Py_CLEAR(fc->port_object);
    for (PyObject *&function : fc->fallbacks) Py_CLEAR(function);
    return 0;
}

void fast_call_dealloc(PyObject *self) {
    PyTypeObject *type = Py_TYPE(self);
    PyObject_GC_UnTrack(self);
    fast_call_clear(self);
    auto *fc = reinterpret_cast<FastCall *>(self);
    delete fc->waiters;  // nobody waits: a waiter holds a reference to self
    fc->waiters = nullptr;
    type->tp_free(self);
    Py_DECREF(type);
}

PyMethodDef fast_call_methods[] = {
    {"value_and_grad", fast_value_and_grad, METH_O,
     "value_and_grad($self, x, /)\n--\n\n(cost, gradient) at x, for scipy.optimize.minimize(..., jac=True).\n\n"
     "The gradient is a fresh array: the next evaluation does not overwrite it."},
    {"residuals", fast_residuals, METH_O,
     "residuals($self, x, /)\n--\n\nThe residual vector at x, for scipy.optimize.least_squares. A fresh array."},
    {"_use_fast_port", fast_call_use_port, METH_O, "_use_fast_port($self, port, /)\n--\n\nRoute evaluations to this DriverPort (None: always the fallbacks)."},
    {"_set_fallbacks", fast_call_set_fallbacks, METH_VARARGS,
     "_set_fallbacks($self, cost, value_and_grad, residuals, /)\n--\n\n"
     "Functions f(self, x) called when the port declines."},
    {"_locked", fast_call_locked, METH_O, "_locked($self, function, /)\n--\n\nCalls function() holding the evaluation lock."},
    {"_after_fork_in_child", fast_call_after_fork, METH_NOARGS,
     "_after_fork_in_child($self, /)\n--\n\nForgets the lock and the port after fork()."},
    {nullptr, nullptr, 0, nullptr},
};

PyType_Slot fast_call_slots[] = {
    {Py_tp_call, reinterpret_cast<void *>(fast_call_slot)},
    {Py_tp_methods, fast_call_methods},
    {Py_tp_traverse, reinterpret_cast<void *>(fast_call_traverse)},
    {Py_tp_clear, reinterpret_cast<void *>(fast_call_clear)},
    {Py_tp_dealloc, reinterpret_cast<void *>(fast_call_dealloc)},
    {Py_tp_doc, const_cast<char *>("Base of pybridge.Simulator: evaluations go to the native port first, "
                                   "one at a time.")},
    {0, nullptr},
};

PyType_Spec fast_call_spec = {"pybridge._native.FastCall", sizeof(FastCall), 0,
                              Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC, fast_call_slots};

py::dict layout(uint32_t n_params, uint32_t n_residuals, uint32_t capabilities) {
    pybridge_layout out{};
    if (pybridge_layout_compute(n_params, n_residuals, capabilities, &out) != PYBRIDGE_OK) {
        throw py::value_error("no layout for " + std::to_string(n_params) + " parameters, " +
                              std::to_string(n_residuals) + " residuals, capabilities " +
                              std::to_string(capabilities));
    }
    py::dict result;
    result["params_offset"] = out.params_offset;
    result["gradient_offset"] = out.gradient_offset;
    result["residuals_offset"] = out.residuals_offset;
    result["segment_size"] = out.segment_size;
    return result;
}

// Returns None for a valid header, else the reason it is not.
std::optional<std::string> validate_header(py::buffer segment) {
    const py::buffer_info info = segment.request();
    char message[512];
    if (pybridge_header_validate(info.ptr, static_cast<uint64_t>(info.size * info.itemsize), message,
                                 sizeof message) == PYBRIDGE_OK) {
        return std::nullopt;
    }
    return std::string(message);
}

// Removes a shared-memory object; one already gone is fine (a simulator, or
// `pybridge clean`, removes the channel of a driver it believed dead).
void unlink_segment(const std::string &name) {
    const std::string object = "/" + name;
    if (::shm_unlink(object.c_str()) != 0 && errno != ENOENT) {
        PyErr_SetFromErrnoWithFilename(PyExc_OSError, object.c_str());
        throw py::error_already_set();
    }
}

double residual_cost(py::array_t<double, py::array::c_style | py::array::forcecast> residuals) {
    return pybridge::detail::half_sum_of_squares(residuals.data(), static_cast<size_t>(residuals.size()));
}

}  // namespace

PYBIND11_MODULE(_native, m) {
    m.doc() = "Compiled half of pybridge: protocol tables, the shim's simulator end, OS helpers.";
    m.attr("__version__") = pybridge_version();

    m.attr("MAGIC") = PYBRIDGE_MAGIC;
    m.attr("PROTOCOL_VERSION") = PYBRIDGE_PROTOCOL_VERSION;
    m.attr("HEADER_SIZE") = sizeof(pybridge_header);
    m.attr("ERROR_TEXT_SIZE") = PYBRIDGE_ERROR_TEXT_SIZE;
    m.attr("REGION_ALIGN") = PYBRIDGE_REGION_ALIGN;
    m.attr("CHANNEL_ENV") = PYBRIDGE_CHANNEL_ENV;
    m.attr("REQUEST_SEM_SUFFIX") = PYBRIDGE_REQUEST_SEM_SUFFIX;
    m.attr("REPLY_SEM_SUFFIX") = PYBRIDGE_REPLY_SEM_SUFFIX;
    m.attr("CHANNEL_NAME_MAX") = PYBRIDGE_CHANNEL_NAME_MAX;
    m.attr("SEMAPHORE_NAME_SIZE") = PYBRIDGE_SEMAPHORE_NAME_SIZE;
    m.attr("LIVENESS_PERIOD_MS") = PYBRIDGE_LIVENESS_PERIOD_MS;

    py::dict states, capabilities, kinds, replies, statuses;
    states["CREATED"] = int{PYBRIDGE_STATE_CREATED};
    states["DECLARED"] = int{PYBRIDGE_STATE_DECLARED};
    states["READY"] = int{PYBRIDGE_STATE_READY};
    states["REJECTED"] = int{PYBRIDGE_STATE_REJECTED};
    states["CLOSED"] = int{PYBRIDGE_STATE_CLOSED};
    capabilities["GRADIENT"] = int{PYBRIDGE_CAP_GRADIENT};
    capabilities["RESIDUALS"] = int{PYBRIDGE_CAP_RESIDUALS};
    kinds["COST"] = int{PYBRIDGE_REQUEST_COST};
    kinds["GRADIENT"] = int{PYBRIDGE_REQUEST_GRADIENT};
    kinds["RESIDUALS"] = int{PYBRIDGE_REQUEST_RESIDUALS};
    replies["OK"] = int{PYBRIDGE_REPLY_OK};
    replies["FAILED"] = int{PYBRIDGE_REPLY_FAILED};
    statuses["OK"] = int{PYBRIDGE_OK};
    statuses["CLOSED"] = int{PYBRIDGE_CLOSED};
    statuses["TIMEOUT"] = int{PYBRIDGE_TIMEOUT};
    statuses["E_INVALID_ARGUMENT"] = int{PYBRIDGE_E_INVALID_ARGUMENT};
    statuses["E_NO_CHANNEL"] = int{PYBRIDGE_E_NO_CHANNEL};
    statuses["E_SYSTEM"] = int{PYBRIDGE_E_SYSTEM};
    statuses["E_PROTOCOL"] = int{PYBRIDGE_E_PROTOCOL};
    statuses["E_REJECTED"] = int{PYBRIDGE_E_REJECTED};
    statuses["E_DRIVER_GONE"] = int{PYBRIDGE_E_DRIVER_GONE};
    statuses["E_TAKEN"] = int{PYBRIDGE_E_TAKEN};
    statuses["E_NO_SPACE"] = int{PYBRIDGE_E_NO_SPACE};
    m.attr("STATES") = states;
    m.attr("CAPABILITIES") = capabilities;
    m.attr("REQUEST_KINDS") = kinds;
    m.attr("REPLY_STATUSES") = replies;
    m.attr("STATUS_CODES") = statuses;

    m.def("header_fields", &header_fields, "(name, offset, numpy dtype) of every field of pybridge_header.");
    m.def("layout", &layout, py::arg("n_params"), py::arg("n_residuals"), py::arg("capabilities"),
          "Region offsets and segment size for a channel of this shape (pybridge_layout_compute).");
    m.def("validate_header", &validate_header, py::arg("segment"),
          "None if the buffer starts with a valid header, else the reason (pybridge_header_validate).");
    m.def("process_alive", &pybridge::detail::process_alive, py::arg("pid"),
          "True while the process runs (zombies count as dead).");
    m.def("unlink_segment", &unlink_segment, py::arg("name"),
          "Remove the shared-memory object /name (already gone is fine).");
    m.def("residual_cost", &residual_cost, py::arg("residuals"),
          "0.5 * sum(r**2), computed exactly as the fast path computes it.");

    py::class_<DriverPort> driver_port(m, "DriverPort");
    py::enum_<DriverPort::Outcome>(driver_port, "Outcome", "Where the latest request stands (enum pybridge_outcome).")
        .value("NOT_SENT", DriverPort::Outcome(PYBRIDGE_OUTCOME_NOT_SENT))
        .value("PENDING", DriverPort::Outcome(PYBRIDGE_OUTCOME_PENDING))
        .value("ANSWERED", DriverPort::Outcome(PYBRIDGE_OUTCOME_ANSWERED));
    driver_port
        .def(py::init<const std::string &, const std::string &, double>(), py::arg("name"),
             py::arg("reply_semaphore"), py::arg("poll_seconds"))
        .def("wait_declaration", &DriverPort::wait_declaration, py::arg("slice_seconds"))
        .def("reject", &DriverPort::reject, py::arg("reason"))
        .def("accept", &DriverPort::accept, py::arg("n_params"), py::arg("n_residuals"), py::arg("capabilities"),
             py::arg("spin_us"))
        .def("shutdown", &DriverPort::shutdown)
        .def("send", &DriverPort::send, py::arg("x"), py::arg("kind"))
        .def("serves", &DriverPort::serves, py::arg("kind"))
        .def("wait", &DriverPort::wait)
        .def("reply", &DriverPort::reply, "(reply_status, cost, error text) of the answered request.")
        .def("release", &DriverPort::release)
        .def_property("timeout", &DriverPort::timeout, &DriverPort::set_timeout,
                      "Seconds a request may wait for its reply (0: no limit); no wait slice reaches past it.")
        .def_property_readonly("answers", &DriverPort::answers)
        .def_property_readonly("outcome", [](const DriverPort &port) { return DriverPort::Outcome(port.outcome()); })
        .def_property_readonly("seq", &DriverPort::seq)
        .def_property_readonly("last_error", &DriverPort::last_error)
        .def_property_readonly("elapsed", &DriverPort::elapsed)
        .def_readwrite("allow_nonfinite", &DriverPort::allow_nonfinite_);
    // After DriverPort, so that its signature can name the class.
    m.def("wait_any", &wait_any, py::arg("ports"), py::arg("slice_seconds"),
          "Index of the first of these ports (sharing a doorbell) with its reply, or None after the slice.");

    PyObject *fast_call_type = PyType_FromSpec(&fast_call_spec);
    if (fast_call_type == nullptr) throw py::error_already_set();
    m.add_object("FastCall", py::reinterpret_steal<py::object>(fast_call_type));

    m.def("_set_shim_error", &set_shim_error, py::arg("type"),
          "The exception class raised for failed shim calls (pybridge.errors.ShimError; set at import).");

    py::class_<PyChannel>(m, "SimulatorChannel", "The simulator's end of a channel (pybridge_channel_*).")
        .def(py::init<std::optional<std::string>, uint32_t, uint32_t, uint32_t>(), py::arg("name") = py::none(),
             py::arg("n_params") = 0, py::arg("n_residuals") = 0, py::arg("capabilities") = 0)
        .def("wait", [](py::object self) { return self.cast<PyChannel &>().wait(self); })
        .def("reply", &PyChannel::reply, py::arg("cost"))
        .def("reply_residuals", &PyChannel::reply_residuals)
        .def("reply_error", &PyChannel::reply_error, py::arg("message"))
        .def("driver_alive", &PyChannel::driver_alive,
             "False once the driver died or closed the channel (pybridge_channel_driver_alive).")
        .def("set_watchdog", &PyChannel::set_watchdog, py::arg("enabled"))
        .def_property_readonly("name", &PyChannel::name);
}
