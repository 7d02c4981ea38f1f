// The rule for channel and semaphore names, shared by both ends.
#pragma once

#include <unistd.h>

#include <cstddef>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>

#include "pybridge/protocol.h"

namespace pybridge::detail {

// 1 to max_length characters from [A-Za-z0-9._-]: portable POSIX object names, nothing a shell or a
// path could misread.
inline bool valid_name(const char *name, size_t max_length) noexcept {
    const size_t length = std::strlen(name);
    if (length == 0 || length > max_length) return false;
    for (size_t i = 0; i < length; ++i) {
        const char c = name[i];
        const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
                        c == '_' || c == '.';
        if (!ok) return false;
    }
    return true;
}

// A fresh name of a kind ("" for a channel, "bell-" for a doorbell) for this process, in the form
// PYBRIDGE_NAME_PREFIX documents. The C driver and the Python one (through _native.new_name) make
// their names here.
inline std::string new_name(const char *kind) {
    std::random_device random;  // the kernel's or the CPU's random source: nobody can guess or squat the name
    char name[PYBRIDGE_CHANNEL_NAME_MAX + 1];
    std::snprintf(name, sizeof name, PYBRIDGE_NAME_PREFIX "%s%ld-%08x%08x%08x", kind, static_cast<long>(::getpid()),
                  random(), random(), random());
    return name;
}

}  // namespace pybridge::detail
