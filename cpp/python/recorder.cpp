// Recorder: a calibration's per-evaluation bookkeeping on a single Simulator, in C (see below).
#include <time.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <memory>
#include <vector>

#include "bindings.hpp"

namespace pybridge::python {
namespace {

// Recorder: what pybridge.minimize hands SciPy as the cost function when it
// drives one Simulator (pybridge/optimize/calibration.py). On a fast model the
// calibration's own bookkeeping — copy x, two timestamps, a record, counts —
// cost as much as SciPy itself when it was Python (measured in `pybridge
// bench`, "calibration"), so the common case happens here: the solver vector
// is turned into the physical one (the same arithmetic as
// Parameters.from_solver), the Simulator is called, and x, cost and times are
// appended to columns. Python turns the columns into records a batch at a
// time (take()), and decides everything else in its hooks:
//
//   on_due(before)  before=True: an evaluation is asked while `blocked` is
//                   set (a stop was asked) or while the countdown `remaining`
//                   is spent (the budget's share given here is used up, or
//                   another thread's on_due has not granted more yet): Python
//                   must raise Stopped, or clear `blocked` and grant() more.
//                   before=False: after an evaluation or iteration, when the
//                   countdown `remaining` reached 0, `next_drain` passed, the
//                   cost reached `target`, or (an iteration) while blocked.
//                   It raises Stopped if a stop was asked.
//   on_failure(x, started, finished, error)
//                   the Simulator raised an Exception: Python records it; the
//                   error is then raised to SciPy as it was.
//   fallback(z)     a vector this class does not take (not n float64 values, or
//                   a call from a second thread while one is under way):
//                   Python's own path evaluates it.
//
// Rows are kept in the order they happened; an iteration notes how many
// evaluation rows came before it, so that Python merges both streams back in
// order. Its state is only touched with the GIL held.
struct State {
    PyObject *simulator = nullptr;
    PyObject *on_due = nullptr;
    PyObject *on_failure = nullptr;
    PyObject *fallback = nullptr;
    PyObject *x_array = nullptr;  // the physical x handed to the Simulator, reused
    double *x = nullptr;
    Py_ssize_t n = 0;
    bool any_scaled = false;
    std::vector<double> offset, width, lower, upper;
    std::vector<char> scaled;
    // Pending evaluations (x row-major) and iterations.
    std::vector<double> rows_x, cost, started, finished, request_latency, reply_latency;
    std::vector<double> iteration_x, iteration_cost, iteration_time;
    std::vector<long long> iteration_after;
    long long remaining = 0;
    double next_drain = 0.0;
    double target = -INFINITY;
    bool blocked = false;
    bool in_call = false;  // a Simulator call is under way (it lets go of the GIL while it waits)
};

struct Recorder {
    PyObject_HEAD
    State *s;
};

double wall_clock() {  // what time.time() reads
    timespec now{};
    ::clock_gettime(CLOCK_REALTIME, &now);
    return static_cast<double>(now.tv_sec) + static_cast<double>(now.tv_nsec) * 1e-9;
}

// The physical vector for SciPy's z into out (Parameters.from_solver, same
// operations in the same order, so that x is bit-identical to Python's).
// False, no exception set, when z is not n float64 values.
bool physical(const State &s, PyObject *z, double *out) {
    Py_buffer view{};
    const double *z_values = float64_values(z, s.n);
    if (z_values == nullptr) {  // another contiguous float64 vector (a memoryview, an array.array)
        if (PyObject_GetBuffer(z, &view, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT) != 0) {
            PyErr_Clear();
            return false;
        }
        const bool fits = view.format != nullptr && std::strcmp(view.format, "d") == 0 &&
                          view.len == static_cast<Py_ssize_t>(s.n * sizeof(double));
        if (!fits) {
            PyBuffer_Release(&view);
            return false;
        }
        z_values = static_cast<const double *>(view.buf);
    }
    if (!s.any_scaled) {
        std::memcpy(out, z_values, s.n * sizeof(double));
    } else {
        for (Py_ssize_t i = 0; i < s.n; ++i) {
            double x = s.offset[i] + z_values[i] * s.width[i];
            // np.clip: NaN stays NaN (std::max/min return their first argument on NaN).
            if (s.scaled[i]) x = std::min(std::max(x, s.lower[i]), s.upper[i]);
            out[i] = x;
        }
    }
    if (view.obj != nullptr) PyBuffer_Release(&view);
    return true;
}

// Calls on_due(before); false with the exception set if it raised.
bool call_due(State &s, bool before) {
    PyObject *result = PyObject_CallOneArg(s.on_due, before ? Py_True : Py_False);
    if (result == nullptr) return false;
    Py_DECREF(result);
    return true;
}

// Takes one evaluation of the countdown before it starts, asking Python first when none is left or a
// stop was asked. The countdown is taken at the start, not at the end: while another thread's
// on_due(False) delivers records (a callback may sleep, numpy may let the GIL go) this thread can
// run, and an evaluation it started on a spent countdown would be one beyond the budget; it waits
// for that on_due on Python's lock instead.
bool let_through(State &s) {
    if (s.blocked || s.remaining <= 0) {
        if (!call_due(s, true)) return false;
        if (s.blocked || s.remaining <= 0) {
            PyErr_SetString(PyExc_RuntimeError, "pybridge: the calibration neither stopped nor unblocked the recorder");
            return false;
        }
    }
    --s.remaining;
    return true;
}

PyObject *new_x_copy(const State &s) {
    py::array_t<double> copy(s.n);
    std::memcpy(copy.mutable_data(), s.x, s.n * sizeof(double));
    return copy.release().ptr();
}

PyObject *recorder_call(PyObject *self, PyObject *args, PyObject *kwargs) {
    State &s = *reinterpret_cast<Recorder *>(self)->s;
    if ((kwargs != nullptr && PyDict_GET_SIZE(kwargs) != 0) || PyTuple_GET_SIZE(args) != 1) {
        PyErr_SetString(PyExc_TypeError, "the calibration's cost function takes one argument, the solver vector");
        return nullptr;
    }
    PyObject *z = PyTuple_GET_ITEM(args, 0);
    // A second thread while a call is under way (SciPy's workers= with a thread pool) would overwrite
    // the one x buffer that call records: it takes Python's path, which is thread-safe.
    if (s.in_call) return PyObject_CallOneArg(s.fallback, z);
    if (!let_through(s)) return nullptr;
    if (!physical(s, z, s.x)) return PyObject_CallOneArg(s.fallback, z);
    forget_latency();  // a simulator that is not a FastCall leaves it NaN
    const bool was_measuring = measuring_latency;
    measuring_latency = true;
    const double started = wall_clock();
    s.in_call = true;
    PyObject *result = PyObject_CallOneArg(s.simulator, s.x_array);
    s.in_call = false;
    measuring_latency = was_measuring;
    const double finished = wall_clock();
    double cost = 0.0;
    if (result != nullptr) {
        cost = PyFloat_AsDouble(result);
        if (cost == -1.0 && PyErr_Occurred()) Py_CLEAR(result);
    }
    if (result == nullptr) {
        // An Exception is recorded as a failed evaluation; KeyboardInterrupt and the like just pass.
        if (!PyErr_ExceptionMatches(PyExc_Exception)) return nullptr;
        PyObject *type, *value, *traceback;
        PyErr_Fetch(&type, &value, &traceback);
        PyErr_NormalizeException(&type, &value, &traceback);
        if (traceback != nullptr) PyException_SetTraceback(value, traceback);
        PyObject *x = new_x_copy(s);
        PyObject *started_object = PyFloat_FromDouble(started);
        PyObject *finished_object = PyFloat_FromDouble(finished);
        PyObject *recorded =
            PyObject_CallFunctionObjArgs(s.on_failure, x, started_object, finished_object, value, nullptr);
        Py_DECREF(x);
        Py_DECREF(started_object);
        Py_DECREF(finished_object);
        if (recorded == nullptr) {  // the hook's own error wins
            Py_XDECREF(type);
            Py_XDECREF(value);
            Py_XDECREF(traceback);
            return nullptr;
        }
        Py_DECREF(recorded);
        PyErr_Restore(type, value, traceback);
        return nullptr;
    }
    s.rows_x.insert(s.rows_x.end(), s.x, s.x + s.n);
    s.cost.push_back(cost);
    s.started.push_back(started);
    s.finished.push_back(finished);
    const Latency latency = last_latency();
    s.request_latency.push_back(latency.request);
    s.reply_latency.push_back(latency.reply);
    if (s.remaining <= 0 || finished >= s.next_drain || cost <= s.target) {
        if (!call_due(s, false)) {
            Py_DECREF(result);
            return nullptr;
        }
    }
    return result;
}

// An iteration at solver vector z.
PyObject *add_iteration(State &s, PyObject *z, double cost) {
    const size_t at = s.iteration_x.size();
    s.iteration_x.resize(at + s.n);
    if (!physical(s, z, s.iteration_x.data() + at)) {
        s.iteration_x.resize(at);
        py::array_t<double, py::array::c_style | py::array::forcecast> point;
        try {
            point = py::array_t<double, py::array::c_style | py::array::forcecast>::ensure(z);
        } catch (py::error_already_set &error) {
            error.restore();
            return nullptr;
        }
        if (!point || point.size() != s.n || !physical(s, point.ptr(), s.x)) {
            PyErr_Format(PyExc_ValueError, "an iteration's point must hold %zd values", s.n);
            return nullptr;
        }
        s.iteration_x.insert(s.iteration_x.end(), s.x, s.x + s.n);
    }
    s.iteration_cost.push_back(cost);
    const double now = wall_clock();
    s.iteration_time.push_back(now);
    s.iteration_after.push_back(static_cast<long long>(s.cost.size()));
    // Not before=True: an iteration evaluates nothing, so a spent budget does not stop it (the next
    // evaluation does); a stop that was asked does, as check_stopped in Python's path.
    if (s.blocked || now >= s.next_drain) {
        if (!call_due(s, false)) return nullptr;
    }
    Py_RETURN_NONE;
}

// iteration(z, cost): the SciPy method finished an iteration at z.
PyObject *recorder_iteration(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    State &s = *reinterpret_cast<Recorder *>(self)->s;
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "iteration(z, cost) takes two arguments");
        return nullptr;
    }
    const double cost = PyFloat_AsDouble(args[1]);
    if (cost == -1.0 && PyErr_Occurred()) return nullptr;
    return add_iteration(s, args[0], cost);
}

// callback(intermediate_result): SciPy's per-iteration callback, as Objective.callback. By this
// parameter name minimize and differential evolution pass an OptimizeResult (x, fun); shgo and direct
// pass the point alone, positionally.
PyObject *recorder_callback(PyObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *names) {
    State &s = *reinterpret_cast<Recorder *>(self)->s;
    const Py_ssize_t given = PyVectorcall_NARGS(nargs) + (names == nullptr ? 0 : PyTuple_GET_SIZE(names));
    if (given != 1 || (names != nullptr && PyTuple_GET_SIZE(names) == 1 &&
                       PyUnicode_CompareWithASCIIString(PyTuple_GET_ITEM(names, 0), "intermediate_result") != 0)) {
        PyErr_SetString(PyExc_TypeError, "callback takes one argument, intermediate_result");
        return nullptr;
    }
    PyObject *result = args[0];
    if (!PyDict_Check(result)) return add_iteration(s, result, NAN);  // a point
    PyObject *x = PyDict_GetItemString(result, "x");  // borrowed
    if (x == nullptr) {
        PyErr_SetString(PyExc_KeyError, "the OptimizeResult passed to the callback has no x");
        return nullptr;
    }
    PyObject *fun = PyDict_GetItemString(result, "fun");
    double cost = NAN;
    if (fun != nullptr) {
        cost = PyFloat_AsDouble(fun);
        if (cost == -1.0 && PyErr_Occurred()) return nullptr;
    }
    return add_iteration(s, x, cost);
}

template <typename T>
py::array_t<T> column(std::vector<T> &values, Py_ssize_t width) {
    const Py_ssize_t rows = width == 0 ? static_cast<Py_ssize_t>(values.size())
                                       : static_cast<Py_ssize_t>(values.size()) / width;
    py::array_t<T> out = width == 0 ? py::array_t<T>(rows) : py::array_t<T>({rows, width});
    if (!values.empty()) std::memcpy(out.mutable_data(), values.data(), values.size() * sizeof(T));
    values.clear();
    return out;
}

// take() -> (x, cost, started, finished, request_latency, reply_latency, iteration_after, iteration_x,
//           iteration_cost, iteration_time):
// the pending rows as fresh arrays, which are then forgotten here.
PyObject *recorder_take(PyObject *self, PyObject *) {
    State &s = *reinterpret_cast<Recorder *>(self)->s;
    try {
        py::tuple taken = py::make_tuple(column(s.rows_x, s.n), column(s.cost, 0), column(s.started, 0),
                                         column(s.finished, 0), column(s.request_latency, 0),
                                         column(s.reply_latency, 0), column(s.iteration_after, 0),
                                         column(s.iteration_x, s.n), column(s.iteration_cost, 0),
                                         column(s.iteration_time, 0));
        return taken.release().ptr();
    } catch (py::error_already_set &error) {
        error.restore();
        return nullptr;
    }
}

PyObject *get_pending(PyObject *self, void *) {
    const State &s = *reinterpret_cast<Recorder *>(self)->s;
    return PyLong_FromSize_t(s.cost.size() + s.iteration_cost.size());
}

PyObject *get_busy(PyObject *self, void *) { return PyBool_FromLong(reinterpret_cast<Recorder *>(self)->s->in_call); }

PyObject *get_blocked(PyObject *self, void *) { return PyBool_FromLong(reinterpret_cast<Recorder *>(self)->s->blocked); }

int set_blocked(PyObject *self, PyObject *value, void *) {
    const int truth = value == nullptr ? -1 : PyObject_IsTrue(value);
    if (truth < 0) {
        if (!PyErr_Occurred()) PyErr_SetString(PyExc_AttributeError, "blocked cannot be deleted");
        return -1;
    }
    reinterpret_cast<Recorder *>(self)->s->blocked = truth != 0;
    return 0;
}

PyObject *get_remaining(PyObject *self, void *) { return PyLong_FromLongLong(reinterpret_cast<Recorder *>(self)->s->remaining); }

// grant(left, batch, wanted) -> granted: shares out the evaluations a budget has `left` (None: no
// budget), less those this recorder started and has not handed over (its pending rows and a call
// under way): `wanted` go to the caller (Python's own path), the rest, at most `batch`, become the
// countdown. In one call, with the GIL held throughout: a countdown set from a count read a moment
// earlier would let another thread's evaluation of that moment go twice.
PyObject *recorder_grant(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    State &s = *reinterpret_cast<Recorder *>(self)->s;
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "grant(left, batch, wanted) takes three arguments");
        return nullptr;
    }
    const long long batch = PyLong_AsLongLong(args[1]);
    const long long wanted = PyLong_AsLongLong(args[2]);
    if ((batch == -1 || wanted == -1) && PyErr_Occurred()) return nullptr;
    if (args[0] == Py_None) {
        s.remaining = batch;
        return PyLong_FromLongLong(wanted);
    }
    long long left = PyLong_AsLongLong(args[0]);
    if (left == -1 && PyErr_Occurred()) return nullptr;
    left -= static_cast<long long>(s.cost.size()) + (s.in_call ? 1 : 0);
    const long long granted = std::clamp(wanted, 0LL, std::max(left, 0LL));
    s.remaining = std::clamp(left - granted, 0LL, batch);
    return PyLong_FromLongLong(granted);
}

template <double State::*Field>
PyObject *get_double(PyObject *self, void *) {
    return PyFloat_FromDouble(reinterpret_cast<Recorder *>(self)->s->*Field);
}

template <double State::*Field>
int set_double(PyObject *self, PyObject *value, void *) {
    const double number = value == nullptr ? -1.0 : PyFloat_AsDouble(value);
    if (value == nullptr || (number == -1.0 && PyErr_Occurred())) {
        if (!PyErr_Occurred()) PyErr_SetString(PyExc_AttributeError, "cannot be deleted");
        return -1;
    }
    reinterpret_cast<Recorder *>(self)->s->*Field = number;
    return 0;
}

std::vector<double> doubles(py::handle values, Py_ssize_t n, const char *name) {
    auto array = py::array_t<double, py::array::c_style | py::array::forcecast>::ensure(values);
    if (!array || array.size() != n) throw py::value_error(std::string(name) + " must hold n values");
    return {array.data(), array.data() + n};
}

// Recorder(simulator, n, offset, width, lower, upper, scaled, on_due, on_failure, fallback)
PyObject *recorder_new(PyTypeObject *type, PyObject *args, PyObject *kwargs) {
    static const char *keywords[] = {"simulator", "n", "offset", "width", "lower", "upper", "scaled",
                                     "on_due", "on_failure", "fallback", nullptr};
    PyObject *simulator, *offset, *width, *lower, *upper, *scaled, *on_due, *on_failure, *fallback;
    Py_ssize_t n;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OnOOOOOOOO:Recorder", const_cast<char **>(keywords), &simulator,
                                     &n, &offset, &width, &lower, &upper, &scaled, &on_due, &on_failure, &fallback)) {
        return nullptr;
    }
    if (n <= 0) {
        PyErr_SetString(PyExc_ValueError, "n must be positive");
        return nullptr;
    }
    auto state = std::make_unique<State>();
    try {
        state->n = n;
        state->offset = doubles(offset, n, "offset");
        state->width = doubles(width, n, "width");
        state->lower = doubles(lower, n, "lower");
        state->upper = doubles(upper, n, "upper");
        for (double flag : doubles(scaled, n, "scaled")) state->scaled.push_back(flag != 0.0);
        state->any_scaled = std::any_of(state->scaled.begin(), state->scaled.end(), [](char f) { return f != 0; });
        py::array_t<double> x(n);
        state->x = x.mutable_data();
        state->x_array = x.release().ptr();
    } catch (py::error_already_set &error) {
        error.restore();
        return nullptr;
    } catch (const std::exception &error) {
        PyErr_SetString(PyExc_ValueError, error.what());
        return nullptr;
    }
    auto *self = reinterpret_cast<Recorder *>(type->tp_alloc(type, 0));
    if (self == nullptr) {
        Py_DECREF(state->x_array);
        return nullptr;
    }
    for (PyObject *object : {simulator, on_due, on_failure, fallback}) Py_INCREF(object);
    state->simulator = simulator;
    state->on_due = on_due;
    state->on_failure = on_failure;
    state->fallback = fallback;
    self->s = state.release();
    return reinterpret_cast<PyObject *>(self);
}

int recorder_traverse(PyObject *self, visitproc visit, void *arg) {
    State *s = reinterpret_cast<Recorder *>(self)->s;
    if (s != nullptr) {
        Py_VISIT(s->simulator);
        Py_VISIT(s->on_due);
        Py_VISIT(s->on_failure);
        Py_VISIT(s->fallback);
    }
    Py_VISIT(Py_TYPE(self));
    return 0;
}

int recorder_clear(PyObject *self) {
    State *s = reinterpret_cast<Recorder *>(self)->s;
    if (s != nullptr) {
        Py_CLEAR(s->simulator);
        Py_CLEAR(s->on_due);
        Py_CLEAR(s->on_failure);
        Py_CLEAR(s->fallback);
    }
    return 0;
}

void recorder_dealloc(PyObject *self) {
    PyTypeObject *type = Py_TYPE(self);
    PyObject_GC_UnTrack(self);
    recorder_clear(self);
    auto *recorder = reinterpret_cast<Recorder *>(self);
    if (recorder->s != nullptr) {
        Py_XDECREF(recorder->s->x_array);
        delete recorder->s;
        recorder->s = nullptr;
    }
    type->tp_free(self);
    Py_DECREF(type);
}

PyMethodDef recorder_methods[] = {
    {"iteration", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(recorder_iteration)), METH_FASTCALL,
     "iteration($self, z, cost, /)\n--\n\nThe SciPy method finished an iteration at solver vector z (cost NaN if "
     "unknown)."},
    {"callback", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(recorder_callback)),
     METH_FASTCALL | METH_KEYWORDS,
     "callback($self, /, intermediate_result)\n--\n\nSciPy's per-iteration callback (an OptimizeResult, or the "
     "point alone)."},
    {"grant", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(recorder_grant)), METH_FASTCALL,
     "grant($self, left, batch, wanted, /)\n--\n\nOf the evaluations a budget has left (None: no budget), less "
     "those started here and not yet taken, gives `wanted` to the caller (returns how many) and at most `batch` "
     "to the countdown."},
    {"take", recorder_take, METH_NOARGS,
     "take($self, /)\n--\n\n(x, cost, started, finished, iteration_after, iteration_x, iteration_cost, "
     "iteration_time): the pending rows, as fresh arrays; forgotten here."},
    {nullptr, nullptr, 0, nullptr},
};

PyGetSetDef recorder_getset[] = {
    {"pending", get_pending, nullptr, "Rows (evaluations and iterations) not yet taken.", nullptr},
    {"busy", get_busy, nullptr, "A Simulator call is under way (from another thread, when asked).", nullptr},
    {"blocked", get_blocked, set_blocked, "When set, every call asks on_due(True) first.", nullptr},
    {"remaining", get_remaining, nullptr,
     "Evaluations this recorder may still start before it asks on_due(True); at 0 after one, on_due(False) is "
     "due (set by grant()).",
     nullptr},
    {"next_drain", get_double<&State::next_drain>, set_double<&State::next_drain>,
     "time.time() after which on_due(False) is due.", nullptr},
    {"target", get_double<&State::target>, set_double<&State::target>,
     "A cost at or below this calls on_due(False) at once.", nullptr},
    {nullptr, nullptr, nullptr, nullptr, nullptr},
};

PyType_Slot recorder_slots[] = {
    {Py_tp_new, reinterpret_cast<void *>(recorder_new)},
    {Py_tp_call, reinterpret_cast<void *>(recorder_call)},
    {Py_tp_methods, recorder_methods},
    {Py_tp_getset, recorder_getset},
    {Py_tp_traverse, reinterpret_cast<void *>(recorder_traverse)},
    {Py_tp_clear, reinterpret_cast<void *>(recorder_clear)},
    {Py_tp_dealloc, reinterpret_cast<void *>(recorder_dealloc)},
    {Py_tp_doc, const_cast<char *>("Recorder(simulator, n, offset, width, lower, upper, scaled, on_due, on_failure, "
                                   "fallback)\n\nA calibration's cost function on one Simulator, with its records "
                                   "kept in columns (pybridge/optimize/calibration.py).")},
    {0, nullptr},
};

PyType_Spec recorder_spec = {"pybridge._native.Recorder", sizeof(Recorder), 0,
                             Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC, recorder_slots};

}  // namespace

void bind_recorder(py::module_ &m) {
    PyObject *recorder_type = PyType_FromSpec(&recorder_spec);
    if (recorder_type == nullptr) throw py::error_already_set();
    m.add_object("Recorder", py::reinterpret_steal<py::object>(recorder_type));
}

}  // namespace pybridge::python
