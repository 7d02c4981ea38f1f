// The C/C++ tests' one assertion: a failed CHECK is reported with its place
// and counted, and the test goes on, so that one run shows every broken check
// (main returns non-zero when `failures` is).
#pragma once

#include <cstdio>

namespace pybridge_tests {
inline int failures = 0;
}  // namespace pybridge_tests

#define CHECK(condition)                                                                        \
    do {                                                                                        \
        if (!(condition)) {                                                                     \
            std::fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #condition); \
            ++pybridge_tests::failures;                                                         \
        }                                                                                       \
    } while (0)
