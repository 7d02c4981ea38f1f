// pybridge._native: the compiled half of the Python package (see bindings.hpp for its files).
#include "bindings.hpp"

#include "pybridge/pybridge.h"

namespace pybridge::python {
namespace {

// The exception class for failed shim calls. It lives in pybridge/errors.py with the rest of the
// hierarchy, and pybridge hands it over at import (_set_shim_error): no lookup by name from C++.
PyObject *shim_error_type = PyExc_RuntimeError;

}  // namespace

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


}  // namespace pybridge::python

PYBIND11_MODULE(_native, m) {
    using namespace pybridge::python;
    m.doc() = "Compiled half of pybridge: protocol tables, both ends of the shim, OS helpers.";
    m.attr("__version__") = pybridge_version();
    m.def("_set_shim_error", &pybridge::python::set_shim_error, py::arg("type"),
          "The exception class raised for failed shim calls (pybridge.errors.ShimError; set at import).");

    bind_protocol(m);
    bind_simulator_channel(m);
    bind_driver_port(m);
    bind_fast_call(m);
    bind_recorder(m);
}
