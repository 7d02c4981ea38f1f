// protocol.h as Python sees it: the constants and the header's field table
// (taken from the C header by the compiler, so Python never restates them),
// the layout computation and header validation, and small OS helpers.
#include <sys/mman.h>

#include <cerrno>
#include <cstddef>
#include <optional>
#include <string>
#include <tuple>
#include <vector>

#include "../src/names.hpp"
#include "../src/process.hpp"
#include "../src/values.hpp"
#include "bindings.hpp"
#include "pybridge/driver.h"
#include "pybridge/pybridge.h"

namespace pybridge::python {
namespace {

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
    PYBRIDGE_FIELD(declared_max_batch);
    PYBRIDGE_FIELD(max_batch);
    PYBRIDGE_FIELD(costs_offset);
    PYBRIDGE_FIELD(request_seq);
    PYBRIDGE_FIELD(request_kind);
    PYBRIDGE_FIELD(driver_sleeping);
    PYBRIDGE_FIELD(request_count);
    PYBRIDGE_FIELD(request_flags);
    PYBRIDGE_FIELD(reply_seq);
    PYBRIDGE_FIELD(reply_status);
    PYBRIDGE_FIELD(simulator_sleeping);
    PYBRIDGE_FIELD(cost);
    PYBRIDGE_FIELD(picked_at_ns);
    PYBRIDGE_FIELD(replied_at_ns);
#undef PYBRIDGE_FIELD
    fields.emplace_back("reply_semaphore", offsetof(pybridge_header, reply_semaphore),
                        "S" + std::to_string(PYBRIDGE_SEMAPHORE_NAME_SIZE));
    fields.emplace_back("doorbell", offsetof(pybridge_header, doorbell), "S" + std::to_string(PYBRIDGE_SEMAPHORE_NAME_SIZE));
    fields.emplace_back("error", offsetof(pybridge_header, error), "S" + std::to_string(PYBRIDGE_ERROR_TEXT_SIZE));
    return fields;
}

py::dict layout(uint32_t n_params, uint32_t n_residuals, uint32_t capabilities, uint32_t max_batch) {
    pybridge_layout out{};
    if (pybridge_layout_compute(n_params, n_residuals, capabilities, max_batch, &out) != PYBRIDGE_OK) {
        throw py::value_error("no layout for " + std::to_string(n_params) + " parameters, " +
                              std::to_string(n_residuals) + " residuals, capabilities " +
                              std::to_string(capabilities) + ", batches of " + std::to_string(max_batch));
    }
    py::dict result;
    result["params_offset"] = out.params_offset;
    result["gradient_offset"] = out.gradient_offset;
    result["residuals_offset"] = out.residuals_offset;
    result["costs_offset"] = out.costs_offset;
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

void bind_protocol(py::module_ &m) {
    m.attr("MAGIC") = PYBRIDGE_MAGIC;
    m.attr("PROTOCOL_VERSION") = PYBRIDGE_PROTOCOL_VERSION;
    m.attr("HEADER_SIZE") = sizeof(pybridge_header);
    m.attr("ERROR_TEXT_SIZE") = PYBRIDGE_ERROR_TEXT_SIZE;
    m.attr("REGION_ALIGN") = PYBRIDGE_REGION_ALIGN;
    m.attr("CHANNEL_ENV") = PYBRIDGE_CHANNEL_ENV;
    m.attr("NAME_PREFIX") = PYBRIDGE_NAME_PREFIX;
    m.def(
        "new_name", [](const std::string &kind) { return pybridge::detail::new_name(kind.c_str()); },
        py::arg("kind") = "",
        "A fresh name for a channel (kind \"\") or a doorbell (\"bell-\"): \"pybridge-\" kind pid \"-\" 24 hex digits.");
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
          py::arg("max_batch") = 1,
          "Region offsets and segment size for a channel of this shape (pybridge_layout_compute).");
    m.def("validate_header", &validate_header, py::arg("segment"),
          "None if the buffer starts with a valid header, else the reason (pybridge_header_validate).");
    m.def("process_alive", &pybridge::detail::process_alive, py::arg("pid"),
          "True while the process runs (zombies count as dead).");
    m.def("unlink_segment", &unlink_segment, py::arg("name"),
          "Remove the shared-memory object /name (already gone is fine).");
    m.def("residual_cost", &residual_cost, py::arg("residuals"),
          "0.5 * sum(r**2), computed exactly as the fast path computes it.");

}

}  // namespace pybridge::python
