// pybridge._bench: the benchmark's cost functions called in-process through
// pybind11 — the lower bound a bridge to another process is measured against.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cstring>

#include "cost.h"

namespace py = pybind11;
using Vector = py::array_t<double, py::array::c_style | py::array::forcecast>;

PYBIND11_MODULE(_bench, m) {
    m.doc() = "In-process baselines for `pybridge bench`.";
    m.def("sum_squares", [](const Vector &x) { return bench_sum_squares(x.data(), x.size()); });
    m.def("rosenbrock", [](const Vector &x) { return bench_rosenbrock(x.data(), x.size(), nullptr); });
    m.def("rosenbrock_value_and_grad", [](const Vector &x) {
        Vector gradient(x.size());
        const double cost = bench_rosenbrock(x.data(), x.size(), gradient.mutable_data());
        return py::make_tuple(cost, gradient);
    });
}
