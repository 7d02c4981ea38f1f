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
#include <optional>
#include <string>
#include <tuple>
#include <vector>

#include <semaphore.h>

#include "../src/process.hpp"
#include "../src/wait.hpp"
#include "pybridge/pybridge.h"

namespace py = pybind11;

namespace {

[[noreturn]] void raise_shim_error(int code, const std::string &message) {
    // The exception classes live in pybridge/errors.py, with the rest of the hierarchy.
    py::object error_type = py::module_::import("pybridge.errors").attr("ShimError");
    PyErr_SetObject(error_type.ptr(), py::make_tuple(message, code).ptr());
    throw py::error_already_set();
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
    std::string name() const { return pybridge_channel_name(handle_); }

private:
    void check(int status) const {
        if (status != PYBRIDGE_OK) raise_shim_error(status, pybridge_channel_last_error(handle_));
    }
    pybridge_channel *handle_ = nullptr;
};


// 1 when the exponent bits of an IEEE double are all ones (inf or NaN). Integer
// operations only: unlike a floating-point sum they may be reordered, so the
// loops below vectorise (even with baseline SSE2) and run at memory speed.
inline uint64_t not_finite(uint64_t bits) { return (((bits >> 52) & 0x7ff) + 1) >> 11; }

// Copies count doubles and tells whether all were finite, in one pass.
bool copy_if_finite(double *target, const double *source, size_t count) {
    uint64_t bad = 0;
    for (size_t i = 0; i < count; ++i) {
        uint64_t bits;
        std::memcpy(&bits, source + i, sizeof bits);
        std::memcpy(target + i, &bits, sizeof bits);
        bad |= not_finite(bits);
    }
    return bad == 0;
}

bool finite_values(const double *values, size_t count) {
    uint64_t bad = 0;
    for (size_t i = 0; i < count; ++i) {
        uint64_t bits;
        std::memcpy(&bits, values + i, sizeof bits);
        bad |= not_finite(bits);
    }
    return bad == 0;
}

// The driver's end of one READY channel, for the hot path. pybridge/channel.py
// owns the objects and their lifetime; this class moves requests and replies.
// The fast calls (cost, value_and_grad, residuals) return the answer, or None
// whenever Python must take over: a parameter vector that is not a finite,
// contiguous float64 array of the right length (nothing sent), a reply still
// pending after one wait slice, or a failed or non-finite reply. `outcome`
// then tells the slow path where the request stands.
class DriverPort {
public:
    enum Outcome { kNotSent = 0, kPending = 1, kAnswered = 2 };

    DriverPort(py::buffer segment, const std::string &request_sem, const std::string &reply_sem, uint32_t spin_us,
               double poll_seconds)
        : buffer_(segment), poll_(std::chrono::nanoseconds(static_cast<int64_t>(poll_seconds * 1e9))) {
        const py::buffer_info info = segment.request(true);
        base_ = static_cast<char *>(info.ptr);
        char message[512];
        if (pybridge_header_validate(base_, static_cast<uint64_t>(info.size * info.itemsize), message,
                                     sizeof message) != PYBRIDGE_OK) {
            throw py::value_error(std::string("invalid channel header: ") + message);
        }
        h_ = reinterpret_cast<pybridge_header *>(base_);
        if (h_->state != PYBRIDGE_STATE_READY) throw py::value_error("the channel is not READY");
        n_params_ = h_->n_params;
        n_residuals_ = h_->n_residuals;
        capabilities_ = h_->capabilities;
        spin_.set_budget(spin_us);
        seq_ = h_->request_seq;
        request_sem_ = open_semaphore(request_sem);
        reply_sem_ = open_semaphore(reply_sem);
    }
    ~DriverPort() { release(); }
    DriverPort(const DriverPort &) = delete;
    DriverPort &operator=(const DriverPort &) = delete;

    // Lets go of the segment (so that it can be unmapped) and the semaphores.
    void release() {
        if (request_sem_ != SEM_FAILED) ::sem_close(request_sem_);
        if (reply_sem_ != SEM_FAILED) ::sem_close(reply_sem_);
        request_sem_ = reply_sem_ = SEM_FAILED;
        h_ = nullptr;
        buffer_ = py::buffer();
    }

    // Copies x into the parameter region and sends a request. False (nothing
    // sent) unless x is a finite, contiguous, native float64 vector of n_params.
    bool send(py::handle x, uint32_t kind) {
        outcome_ = kNotSent;
        if (h_ == nullptr || !py::isinstance<py::array>(x)) return false;
        auto *array = py::detail::array_proxy(x.ptr());
        const auto *descr = py::detail::array_descriptor_proxy(array->descr);
        constexpr int needed = py::detail::npy_api::NPY_ARRAY_C_CONTIGUOUS_ | py::detail::npy_api::NPY_ARRAY_ALIGNED_;
        if (descr->type_num != py::detail::npy_api::NPY_DOUBLE_ || descr->byteorder == '>' || array->nd != 1 ||
            array->dimensions[0] != static_cast<py::ssize_t>(n_params_) || (array->flags & needed) != needed) {
            return false;
        }
        const auto *source = reinterpret_cast<const double *>(array->data);
        double *target = region(h_->params_offset);
        const bool finite = source == target ? finite_values(source, n_params_) : copy_if_finite(target, source, n_params_);
        if (!finite) return false;  // the slow path names the culprit
        h_->request_kind = kind;
        __atomic_store_n(&h_->request_seq, ++seq_, __ATOMIC_SEQ_CST);
        pybridge::detail::wake(h_->simulator_sleeping, request_sem_);
        sent_at_ = pybridge::detail::Clock::now();
        spun_ = false;
        outcome_ = kPending;
        return true;
    }

    // Waits up to one poll slice for the reply: spinning with the GIL held
    // (a fast reply costs less than releasing it), then blocking without it.
    // Only the first slice of a request spins; its end is recorded once.
    bool wait() {
        if (outcome_ != kPending) return outcome_ == kAnswered;
        const uint64_t seq = seq_;
        pybridge_header *h = h_;
        const auto ready = [h, seq] { return pybridge::detail::load_acquire(h->reply_seq) == seq; };
        bool done = !spun_ && pybridge::detail::spin(ready, spin_, sent_at_);
        spun_ = true;
        if (!done) {
            py::gil_scoped_release release;
            done = pybridge::detail::block(ready, h->driver_sleeping, reply_sem_, poll_);
        }
        if (done) {
            spin_.record(pybridge::detail::nanoseconds_since(sent_at_));
            outcome_ = kAnswered;
        }
        return done;
    }

    py::object cost(py::handle x) {
        const bool residual = capabilities_ & PYBRIDGE_CAP_RESIDUALS;
        if (!send(x, residual ? PYBRIDGE_REQUEST_RESIDUALS : PYBRIDGE_REQUEST_COST) || !wait() || !reply_ok()) {
            return py::none();
        }
        double value = h_->cost;
        if (residual) {
            const double *r = region(h_->residuals_offset);
            value = 0.0;
            for (uint32_t i = 0; i < n_residuals_; ++i) value += r[i] * r[i];
            value *= 0.5;
        }
        if (!allow_nonfinite_ && !std::isfinite(value)) return py::none();
        ++answers_;
        return py::float_(value);
    }

    py::object value_and_grad(py::handle x) {
        if (!send(x, PYBRIDGE_REQUEST_GRADIENT) || !wait() || !reply_ok()) return py::none();
        const double value = h_->cost;
        if (!allow_nonfinite_ && (!std::isfinite(value) || !all_finite(h_->gradient_offset, n_params_))) {
            return py::none();
        }
        ++answers_;
        return py::make_tuple(value, copy_of(h_->gradient_offset, n_params_));
    }

    py::object residuals(py::handle x) {
        if (!send(x, PYBRIDGE_REQUEST_RESIDUALS) || !wait() || !reply_ok()) return py::none();
        if (!allow_nonfinite_ && !all_finite(h_->residuals_offset, n_residuals_)) return py::none();
        ++answers_;
        return copy_of(h_->residuals_offset, n_residuals_);
    }

    int outcome() const { return outcome_; }
    uint64_t answers() const { return answers_; }
    uint64_t seq() const { return seq_; }
    double elapsed() const {
        return std::chrono::duration<double>(pybridge::detail::Clock::now() - sent_at_).count();
    }
    bool allow_nonfinite_ = false;

private:
    static sem_t *open_semaphore(const std::string &name) {
        sem_t *sem = ::sem_open(("/" + name).c_str(), 0);
        if (sem == SEM_FAILED) {
            PyErr_SetFromErrnoWithFilename(PyExc_OSError, name.c_str());
            throw py::error_already_set();
        }
        return sem;
    }
    double *region(uint64_t offset) const { return reinterpret_cast<double *>(base_ + offset); }
    bool reply_ok() const { return h_->reply_status == PYBRIDGE_REPLY_OK; }
    bool all_finite(uint64_t offset, uint32_t count) const { return finite_values(region(offset), count); }
    py::array_t<double> copy_of(uint64_t offset, uint32_t count) const {
        py::array_t<double> out(count);
        std::memcpy(out.mutable_data(), region(offset), count * sizeof(double));
        return out;
    }

    py::buffer buffer_;  // keeps the mapping exported while we point into it
    std::chrono::nanoseconds poll_;
    char *base_ = nullptr;
    pybridge_header *h_ = nullptr;
    uint32_t n_params_ = 0, n_residuals_ = 0, capabilities_ = 0;
    sem_t *request_sem_ = SEM_FAILED;
    sem_t *reply_sem_ = SEM_FAILED;
    pybridge::detail::SpinPolicy spin_;
    uint64_t seq_ = 0;
    int outcome_ = kNotSent;
    uint64_t answers_ = 0;  // evaluations answered by the fast calls
    bool spun_ = false;     // the current request had its spin already
    pybridge::detail::Clock::time_point sent_at_{};
};

// The fast calls as plain CPython functions (METH_O) bound to a capsule that
// owns a reference to the port: pybind11's general dispatcher costs about as
// much as a whole round trip (~150 ns here), and these run once per evaluation.
constexpr const char *kPortCapsule = "pybridge.DriverPort";

template <py::object (DriverPort::*Method)(py::handle)>
PyObject *fast_call(PyObject *capsule, PyObject *x) {
    auto *port = static_cast<DriverPort *>(PyCapsule_GetPointer(capsule, kPortCapsule));
    if (port == nullptr) return nullptr;
    try {
        return (port->*Method)(py::handle(x)).release().ptr();
    } catch (py::error_already_set &error) {
        error.restore();
    } catch (const std::exception &error) {
        PyErr_SetString(PyExc_RuntimeError, error.what());
    }
    return nullptr;
}

// (The cost has a faster route still: the FastCall base class below.)
PyMethodDef fast_call_defs[] = {
    {"value_and_grad", fast_call<&DriverPort::value_and_grad>, METH_O, "(cost, gradient) at x, or None."},
    {"residuals", fast_call<&DriverPort::residuals>, METH_O, "The residuals at x, or None."},
};
constexpr size_t kFastCalls = sizeof fast_call_defs / sizeof fast_call_defs[0];

py::tuple fast_calls(py::object self) {
    DriverPort &port = self.cast<DriverPort &>();
    PyObject *capsule = PyCapsule_New(&port, kPortCapsule, [](PyObject *c) {
        Py_XDECREF(static_cast<PyObject *>(PyCapsule_GetContext(c)));
    });
    if (capsule == nullptr || PyCapsule_SetContext(capsule, self.inc_ref().ptr()) != 0) throw py::error_already_set();
    py::object owner = py::reinterpret_steal<py::object>(capsule);
    py::tuple calls(kFastCalls);
    for (size_t i = 0; i < kFastCalls; ++i) {
        PyObject *function = PyCFunction_New(&fast_call_defs[i], capsule);
        if (function == nullptr) throw py::error_already_set();
        calls[i] = py::reinterpret_steal<py::object>(function);
    }
    return calls;
}

// FastCall: a base class whose instances are callable straight from C.
// pybridge.Simulator derives from it, so that sim(x) — SciPy's call, once per
// evaluation — runs DriverPort::cost without a Python frame in between
// (~90 ns, a third of a round trip); anything unusual goes to the Python
// method _call_slow(x).
struct FastCall {
    PyObject_HEAD
    PyObject *port_object;  // the DriverPort, or NULL while unconnected
    DriverPort *port;
};

PyObject *fast_call_slot(PyObject *self, PyObject *args, PyObject *kwargs) {
    auto *fc = reinterpret_cast<FastCall *>(self);
    if (fc->port != nullptr && kwargs == nullptr && PyTuple_GET_SIZE(args) == 1) {
        PyObject *keep = fc->port_object;  // the port may be swapped during the call
        Py_INCREF(keep);
        PyObject *result = nullptr;
        try {
            result = fc->port->cost(py::handle(PyTuple_GET_ITEM(args, 0))).release().ptr();
        } catch (py::error_already_set &error) {
            error.restore();
        }
        Py_DECREF(keep);
        if (result != Py_None) return result;  // the cost, or NULL with an exception set
        Py_DECREF(result);
    }
    PyObject *slow = PyObject_GetAttrString(self, "_call_slow");
    if (slow == nullptr) return nullptr;
    PyObject *result = PyObject_Call(slow, args, kwargs);
    Py_DECREF(slow);
    return result;
}

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

int fast_call_traverse(PyObject *self, visitproc visit, void *arg) {
    Py_VISIT(reinterpret_cast<FastCall *>(self)->port_object);
    Py_VISIT(Py_TYPE(self));
    return 0;
}

int fast_call_clear(PyObject *self) {
    auto *fc = reinterpret_cast<FastCall *>(self);
    fc->port = nullptr;
    Py_CLEAR(fc->port_object);
    return 0;
}

void fast_call_dealloc(PyObject *self) {
    PyTypeObject *type = Py_TYPE(self);
    PyObject_GC_UnTrack(self);
    fast_call_clear(self);
    type->tp_free(self);
    Py_DECREF(type);
}

PyMethodDef fast_call_methods[] = {
    {"_use_fast_port", fast_call_use_port, METH_O, "Route calls to this DriverPort's cost (None: always _call_slow)."},
    {nullptr, nullptr, 0, nullptr},
};

PyType_Slot fast_call_slots[] = {
    {Py_tp_call, reinterpret_cast<void *>(fast_call_slot)},
    {Py_tp_methods, fast_call_methods},
    {Py_tp_traverse, reinterpret_cast<void *>(fast_call_traverse)},
    {Py_tp_clear, reinterpret_cast<void *>(fast_call_clear)},
    {Py_tp_dealloc, reinterpret_cast<void *>(fast_call_dealloc)},
    {Py_tp_doc, const_cast<char *>("Base of pybridge.Simulator: calls go to the native port first.")},
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

// Grows a shared-memory object. multiprocessing.shared_memory cannot resize
// a segment it created, and the protocol grows it once, at READY.
void resize_segment(const std::string &name, uint64_t size) {
    const std::string object = "/" + name;
    const int fd = ::shm_open(object.c_str(), O_RDWR, 0);
    int rc = fd < 0 ? -1 : ::ftruncate(fd, static_cast<off_t>(size));
    const int saved = errno;
    if (fd >= 0) ::close(fd);
    if (rc != 0) {
        errno = saved;
        PyErr_SetFromErrnoWithFilename(PyExc_OSError, object.c_str());
        throw py::error_already_set();
    }
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
    statuses["E_INVALID_ARGUMENT"] = int{PYBRIDGE_E_INVALID_ARGUMENT};
    statuses["E_NO_CHANNEL"] = int{PYBRIDGE_E_NO_CHANNEL};
    statuses["E_SYSTEM"] = int{PYBRIDGE_E_SYSTEM};
    statuses["E_PROTOCOL"] = int{PYBRIDGE_E_PROTOCOL};
    statuses["E_REJECTED"] = int{PYBRIDGE_E_REJECTED};
    statuses["E_DRIVER_GONE"] = int{PYBRIDGE_E_DRIVER_GONE};
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
    m.def("resize_segment", &resize_segment, py::arg("name"), py::arg("size"),
          "Set the size of the shared-memory object /name.");
    m.def("process_alive", &pybridge::detail::process_alive, py::arg("pid"),
          "True while the process runs (zombies count as dead).");

    py::class_<DriverPort>(m, "DriverPort")
        .def(py::init<py::buffer, const std::string &, const std::string &, uint32_t, double>(), py::arg("segment"),
             py::arg("request_semaphore"), py::arg("reply_semaphore"), py::arg("spin_us"), py::arg("poll_seconds"))
        .def("send", &DriverPort::send, py::arg("x"), py::arg("kind"))
        .def("wait", &DriverPort::wait)
        .def("release", &DriverPort::release)
        .def("fast_calls", &fast_calls, "(value_and_grad, residuals) as plain CPython functions.")
        .def_property_readonly("answers", &DriverPort::answers)
        .def_property_readonly("outcome", &DriverPort::outcome)
        .def_property_readonly("seq", &DriverPort::seq)
        .def_property_readonly("elapsed", &DriverPort::elapsed)
        .def_readwrite("allow_nonfinite", &DriverPort::allow_nonfinite_);

    PyObject *fast_call_type = PyType_FromSpec(&fast_call_spec);
    if (fast_call_type == nullptr) throw py::error_already_set();
    m.add_object("FastCall", py::reinterpret_steal<py::object>(fast_call_type));

    py::class_<PyChannel>(m, "Channel")
        .def(py::init<std::optional<std::string>, uint32_t, uint32_t, uint32_t>(), py::arg("name") = py::none(),
             py::arg("n_params") = 0, py::arg("n_residuals") = 0, py::arg("capabilities") = 0)
        .def("wait", [](py::object self) { return self.cast<PyChannel &>().wait(self); })
        .def("reply", &PyChannel::reply, py::arg("cost"))
        .def("reply_residuals", &PyChannel::reply_residuals)
        .def("reply_error", &PyChannel::reply_error, py::arg("message"))
        .def_property_readonly("name", &PyChannel::name);
}
