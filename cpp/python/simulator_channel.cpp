// The shim's simulator end (pybridge.h) for simulators written in Python: pybridge.serve runs on it.
#include <optional>
#include <string>

#include "bindings.hpp"
#include "pybridge/pybridge.h"

namespace pybridge::python {
namespace {

// The simulator end of a channel, for simulators written in Python. Numpy
// views handed out keep this object alive, and the mapping is released only
// when the last of them is gone, so a view can never dangle.
class PyChannel {
public:
    PyChannel(std::optional<std::string> name, uint32_t n_params, uint32_t n_residuals, uint32_t capabilities,
              uint32_t max_batch) {
        const pybridge_declaration declaration{n_params, n_residuals, capabilities, max_batch};
        int status;
        {
            py::gil_scoped_release release;  // the handshake blocks until the driver answers
            status = pybridge_channel_open(name ? name->c_str() : nullptr, &declaration, &handle_);
        }
        max_batch_ = max_batch;
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

    // Returns (seq, kind, params, gradient or None, residuals or None, costs), or None once closed. The
    // arrays are views of the shared regions: of one vector each, or, on a channel that takes batches
    // (max_batch > 1), of shape (count, n) with costs of shape (count,) to fill before reply_batch().
    py::object wait(py::object self) {
        pybridge_request request{};
        int status;
        {
            py::gil_scoped_release release;
            status = pybridge_channel_wait(handle_, &request);
        }
        if (status == PYBRIDGE_CLOSED) return py::none();
        check(status);
        const auto count = static_cast<py::ssize_t>(request.count);
        const auto view = [&](double *data, uint32_t n) -> py::object {
            if (data == nullptr) return py::none();
            const auto length = static_cast<py::ssize_t>(n);
            if (max_batch_ <= 1) return py::array_t<double>({length}, {py::ssize_t{sizeof(double)}}, data, self);
            return py::array_t<double>({count, length}, {length * py::ssize_t{sizeof(double)}, py::ssize_t{sizeof(double)}},
                                       data, self);
        };
        py::object params = view(const_cast<double *>(request.params), request.n_params);
        py::detail::array_proxy(params.ptr())->flags &= ~py::detail::npy_api::NPY_ARRAY_WRITEABLE_;
        py::array_t<double> costs({count}, {py::ssize_t{sizeof(double)}}, request.costs, self);
        return py::make_tuple(request.seq, request.kind, params, view(request.gradient, request.n_params),
                              view(request.residuals, request.n_residuals), costs);
    }

    void reply(double cost) { check(pybridge_channel_reply(handle_, cost)); }
    void reply_residuals() { check(pybridge_channel_reply_residuals(handle_)); }
    void reply_batch() { check(pybridge_channel_reply_batch(handle_)); }
    void reply_error(const std::string &message) { check(pybridge_channel_reply_error(handle_, message.c_str())); }
    bool driver_alive() const { return pybridge_channel_driver_alive(handle_) == PYBRIDGE_OK; }
    void set_watchdog(bool enabled) { check(pybridge_channel_set_watchdog(handle_, enabled ? 1 : 0)); }
    std::string name() const { return pybridge_channel_name(handle_); }

private:
    void check(int status) const {
        if (status != PYBRIDGE_OK) raise_shim_error(status, pybridge_channel_last_error(handle_));
    }
    pybridge_channel *handle_ = nullptr;
    uint32_t max_batch_ = 1;
};


}  // namespace

void bind_simulator_channel(py::module_ &m) {
    py::class_<PyChannel>(m, "SimulatorChannel", "The simulator's end of a channel (pybridge_channel_*).")
        .def(py::init<std::optional<std::string>, uint32_t, uint32_t, uint32_t, uint32_t>(),
             py::arg("name") = py::none(), py::arg("n_params") = 0, py::arg("n_residuals") = 0,
             py::arg("capabilities") = 0, py::arg("max_batch") = 0)
        .def("wait", [](py::object self) { return self.cast<PyChannel &>().wait(self); })
        .def("reply", &PyChannel::reply, py::arg("cost"))
        .def("reply_residuals", &PyChannel::reply_residuals)
        .def("reply_batch", &PyChannel::reply_batch,
             "Replies to the current request: its costs (and gradients or residuals) are filled in place.")
        .def("reply_error", &PyChannel::reply_error, py::arg("message"))
        .def("driver_alive", &PyChannel::driver_alive,
             "False once the driver died or closed the channel (pybridge_channel_driver_alive).")
        .def("set_watchdog", &PyChannel::set_watchdog, py::arg("enabled"))
        .def_property_readonly("name", &PyChannel::name);
}

}  // namespace pybridge::python
