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

#include <string>

namespace py = pybind11;

namespace pybridge::python {

// Raises pybridge.ShimError(message, code).
[[noreturn]] void raise_shim_error(int code, const std::string &message);

void bind_protocol(py::module_ &m);
void bind_simulator_channel(py::module_ &m);
void bind_driver_port(py::module_ &m);
void bind_fast_call(py::module_ &m);
void bind_recorder(py::module_ &m);

}  // namespace pybridge::python
