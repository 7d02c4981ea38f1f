// How both ends of the shim report a failure: the message goes into the handle's own fixed-size
// buffer (no allocation, no global state), the status is returned. Handle is pybridge_channel or
// pybridge_driver: anything with `char error[N]` and `std::string name`.
#pragma once

#include <cerrno>
#include <cstdarg>
#include <cstdio>
#include <cstring>

#include "pybridge/pybridge.h"

namespace pybridge::detail {

template <typename Handle>
int fail(Handle *handle, int status, const char *format, ...) __attribute__((format(printf, 3, 4)));

template <typename Handle>
int fail(Handle *handle, int status, const char *format, ...) {
    va_list args;
    va_start(args, format);
    std::vsnprintf(handle->error, sizeof handle->error, format, args);
    va_end(args);
    return status;
}

// An OS call failed: PYBRIDGE_E_SYSTEM with the call, the channel and errno (or `code`) in the message.
template <typename Handle>
int fail_errno(Handle *handle, const char *what, int code = errno) {
    return fail(handle, PYBRIDGE_E_SYSTEM, "%s failed for channel '%s': %s (errno %d)", what, handle->name.c_str(),
                std::strerror(code), code);
}

}  // namespace pybridge::detail
