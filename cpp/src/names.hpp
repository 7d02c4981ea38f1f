// The rule for channel and semaphore names, shared by both ends.
#pragma once

#include <cstddef>
#include <cstring>

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

}  // namespace pybridge::detail
