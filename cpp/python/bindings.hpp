// Shared by the files of pybridge._native (cpp/python/): one file per thing it binds.
//
//   module.cpp             the module: versions, the exception class handed over by Python
//   protocol.cpp           protocol.h's constants and field table, layout, validation, OS helpers
//   simulator_channel.cpp  the shim's simulator end (pybridge.h) for simulators written in Python
//   driver_port.hpp/.cpp   the shim's driver end (driver.h) for pybridge.Simulator, and wait_any
//   fast_call.cpp          FastCall, the base class whose calls run the driver port from C
//   recorder.cpp           Recorder, a calibration's cost function that keeps its records in columns
#pragma once

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cmath>
#include <string>

namespace py = pybind11;

namespace pybridge::python {

// One evaluation's latency in seconds, request and reply legs (pybridge_driver_latency); NaN where
// it was not measured.
struct Latency {
    double request = NAN;
    double reply = NAN;
};

// Whether this thread's requests ask the simulator for the stamps that measure their latency
// (pybridge_driver_measure_latency): the calibration's recorder, Simulator.evaluate and Pool.evaluate
// turn it on for their calls (_native.measure_latency), so that a plain sim(x) never pays the stamps'
// two clock reads on its round trip. initial-exec: read without a call into the dynamic linker (16
// bytes of this module's TLS fit glibc's surplus for dlopen'ed modules).
inline thread_local bool measuring_latency __attribute__((tls_model("initial-exec"))) = false;

// The latency of this thread's latest evaluation through FastCall (fast_call.cpp); forget_latency()
// resets it to NaN before a call whose latency is wanted.
Latency last_latency() noexcept;
void forget_latency() noexcept;

// Raises pybridge.ShimError(message, code).
[[noreturn]] void raise_shim_error(int code, const std::string &message);

// The values of `x` when it is a numpy array of n native float64 values, contiguous and aligned;
// nullptr otherwise (no exception set). Read from the array's own fields: the buffer protocol costs
// about 0.1 us per call on a fresh array, a tenth of a fast evaluation.
inline const double *float64_values(py::handle x, py::ssize_t n) {
    if (!py::isinstance<py::array>(x)) return nullptr;
    auto *array = py::detail::array_proxy(x.ptr());
    const auto *descr = py::detail::array_descriptor_proxy(array->descr);
    constexpr int needed = py::detail::npy_api::NPY_ARRAY_C_CONTIGUOUS_ | py::detail::npy_api::NPY_ARRAY_ALIGNED_;
    if (descr->type_num != py::detail::npy_api::NPY_DOUBLE_ || descr->byteorder == '>' || array->nd != 1 ||
        array->dimensions[0] != n || (array->flags & needed) != needed) {
        return nullptr;
    }
    return reinterpret_cast<const double *>(array->data);
}

void bind_protocol(py::module_ &m);
void bind_simulator_channel(py::module_ &m);
void bind_driver_port(py::module_ &m);
void bind_fast_call(py::module_ &m);
void bind_recorder(py::module_ &m);

}  // namespace pybridge::python
