// DriverPort's bindings, and wait_any: one thread waiting on many channels that share a doorbell.
#include "driver_port.hpp"

#include <optional>
#include <vector>

namespace pybridge::python {
namespace {

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
    DriverThreads::note_wait();  // its thread is a driver thread (its spin lets the GIL go anyway)
    {
        py::gil_scoped_release release;
        status = pybridge_driver_wait_any(handles.data(), handles.size(),
                                          nanoseconds(slice_seconds), &ready);
    }
    if (status == PYBRIDGE_TIMEOUT) return std::nullopt;
    if (status != PYBRIDGE_OK) raise_shim_error(status, pybridge_driver_last_error(handles.empty() ? nullptr : handles[0]));
    return ready;
}

}  // namespace

void bind_driver_port(py::module_ &m) {
    py::class_<DriverPort> driver_port(m, "DriverPort");
    py::enum_<DriverPort::Outcome>(driver_port, "Outcome", "Where the latest request stands (enum pybridge_outcome).")
        .value("NOT_SENT", DriverPort::Outcome(PYBRIDGE_OUTCOME_NOT_SENT))
        .value("PENDING", DriverPort::Outcome(PYBRIDGE_OUTCOME_PENDING))
        .value("ANSWERED", DriverPort::Outcome(PYBRIDGE_OUTCOME_ANSWERED));
    driver_port
        .def(py::init<const std::string &, const std::optional<std::string> &, double>(), py::arg("name"),
             py::arg("doorbell"), py::arg("poll_seconds"))
        .def("wait_declaration", &DriverPort::wait_declaration, py::arg("slice_seconds"))
        .def("reject", &DriverPort::reject, py::arg("reason"))
        .def("accept", &DriverPort::accept, py::arg("n_params"), py::arg("n_residuals"), py::arg("capabilities"),
             py::arg("max_batch"), py::arg("spin_us"), py::arg("forecast") = true)
        .def("shutdown", &DriverPort::shutdown)
        .def("send", &DriverPort::send, py::arg("x"), py::arg("kind"))
        .def("start", &DriverPort::start, py::arg("x"), py::arg("kind"),
             "Sends the request behind sim(x) (COST), value_and_grad (GRADIENT) or residuals (RESIDUALS); "
             "False when nothing was sent (the slow path decides).")
        .def("finish", &DriverPort::finish, py::arg("kind"),
             "The value of the request start() sent, after at most one wait slice; None for the slow path.")
        .def("start_batch", &DriverPort::start_batch, py::arg("xs"), py::arg("kind"),
             "As start() for the rows of xs, shape (count, n_params), in one request; False when nothing was sent.")
        .def("finish_batch", &DriverPort::finish_batch, py::arg("kind"),
             "The values of the batch start_batch() sent, after at most one wait slice; None while pending or failed.")
        .def("batch_values", &DriverPort::batch_values, py::arg("kind"),
             "The answered batch's costs (COST), (costs, gradients) (GRADIENT) or residuals (RESIDUALS), every "
             "value as the simulator sent it; None unless answered without a reported failure.")
        .def("serves", &DriverPort::serves, py::arg("kind"))
        .def("wait", &DriverPort::wait)
        .def("reply", &DriverPort::reply, "(reply_status, cost, error text) of the answered request.")
        .def("release", &DriverPort::release)
        .def_property("spin_holding_gil", &DriverPort::spin_holding_gil, &DriverPort::set_spin_holding_gil,
                      "Whether a wait spins with the GIL held (default); False for a port that threads share.")
        .def_property("timeout", &DriverPort::timeout, &DriverPort::set_timeout,
                      "Seconds a request may wait for its reply (0: no limit); no wait slice reaches past it.")
        .def_property_readonly("answers", &DriverPort::answers)
        .def_property_readonly("max_batch", &DriverPort::max_batch)
        .def_property_readonly("outcome", [](const DriverPort &port) { return DriverPort::Outcome(port.outcome()); })
        .def_property_readonly("seq", &DriverPort::seq)
        .def_property_readonly("last_error", &DriverPort::last_error)
        .def_property_readonly("elapsed", &DriverPort::elapsed)
        .def_property_readonly(
            "latency", [](const DriverPort &port) { const Latency l = port.latency(); return py::make_tuple(l.request, l.reply); },
            "(request, reply) latency in seconds of the latest answered request; NaN where not measured.")
        .def_readwrite("allow_nonfinite", &DriverPort::allow_nonfinite_);
    // After DriverPort, so that its signature can name the class.
    m.def("wait_any", &wait_any, py::arg("ports"), py::arg("slice_seconds"),
          "Index of the first of these ports (sharing a doorbell) with its reply, or None after the slice.");
    m.def("driver_thread_alone", &DriverThreads::alone_now,
          "Whether the calling thread is this process's only driver thread (no other thread waited on a "
          "simulator within the last second): its Simulators' waits then spin with the GIL held.");

}

}  // namespace pybridge::python
