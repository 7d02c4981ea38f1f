// FastCall: the base class of pybridge.Simulator (see the comment below).
#include <chrono>
#include <condition_variable>
#include <mutex>

#include "driver_port.hpp"

namespace pybridge::python {
namespace {

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
//
// Each call also keeps its latency for the calling thread (last_latency): read
// while the lock is held, it is this thread's evaluation's, whatever another
// thread sharing the Simulator does next.
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

thread_local Latency this_threads_latency __attribute__((tls_model("initial-exec")));  // as measuring_latency

template <py::object (DriverPort::*Method)(py::handle)>
PyObject *evaluate(PyObject *self, PyObject *x, Fallback fallback) {
    auto *fc = reinterpret_cast<FastCall *>(self);
    if (!lock_evaluations(fc)) return nullptr;
    // An untimed call (a plain sim(x)) measures nothing: it skips the bookkeeping below. A timed one
    // was answered by a request of its own only if the port moved on (or was replaced, by a restart):
    // one the fallback never sent must not pass off the previous call's latency as its own.
    const bool timed = measuring_latency;
    const DriverPort *port_before = fc->port;
    const uint64_t seq_before = timed && port_before != nullptr ? port_before->seq() : 0;
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
    const bool answered_here = timed && result != nullptr && fc->port != nullptr &&
                               (fc->port != port_before || fc->port->seq() != seq_before);
    this_threads_latency = answered_here ? fc->port->latency() : Latency{};
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

}  // namespace

Latency last_latency() noexcept { return this_threads_latency; }
void forget_latency() noexcept { this_threads_latency = Latency{}; }

void bind_fast_call(py::module_ &m) {
    PyObject *fast_call_type = PyType_FromSpec(&fast_call_spec);
    if (fast_call_type == nullptr) throw py::error_already_set();
    m.add_object("FastCall", py::reinterpret_steal<py::object>(fast_call_type));
    m.def(
        "take_latency",
        [] {
            const Latency l = last_latency();
            forget_latency();  // taken once: a later call that measures nothing reads NaN, not this
            return py::make_tuple(l.request, l.reply);
        },
        "(request, reply) latency in seconds of this thread's latest evaluation through a Simulator's call, "
        "value_and_grad or residuals, NaN where not measured; then forgotten.");
    m.def(
        "measure_latency",
        [](bool on) {
            const bool was = measuring_latency;
            measuring_latency = on;
            return was;
        },
        py::arg("on"),
        "Whether this thread's next evaluations measure their latency (the simulator stamps their replies, two "
        "clock reads on each round trip); returns the previous setting.");

}

}  // namespace pybridge::python
