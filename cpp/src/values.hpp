// Arithmetic on parameter and result vectors that both ends and the Python
// module must do identically: one implementation each.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>

namespace pybridge::detail {

// 1 when the exponent bits of an IEEE double are all ones (inf or NaN). Integer
// operations only: unlike a floating-point sum they may be reordered, so the
// loops below vectorise (even with baseline SSE2) and run at memory speed.
inline uint64_t not_finite(uint64_t bits) noexcept { return (((bits >> 52) & 0x7ff) + 1) >> 11; }

// Copies count doubles and tells whether all were finite, in one pass.
inline bool copy_if_finite(double *target, const double *source, size_t count) noexcept {
    uint64_t bad = 0;
    for (size_t i = 0; i < count; ++i) {
        uint64_t bits;
        std::memcpy(&bits, source + i, sizeof bits);
        std::memcpy(target + i, &bits, sizeof bits);
        bad |= not_finite(bits);
    }
    return bad == 0;
}

inline bool finite_values(const double *values, size_t count) noexcept {
    uint64_t bad = 0;
    for (size_t i = 0; i < count; ++i) {
        uint64_t bits;
        std::memcpy(&bits, values + i, sizeof bits);
        bad |= not_finite(bits);
    }
    return bad == 0;
}

// The index of the first non-finite value (count if none): for messages, off the hot path.
inline size_t first_non_finite(const double *values, size_t count) noexcept {
    for (size_t i = 0; i < count; ++i) {
        uint64_t bits;
        std::memcpy(&bits, values + i, sizeof bits);
        if (not_finite(bits)) return i;
    }
    return count;
}

// The cost of a residual vector, 0.5 * sum(r^2), as SciPy's least_squares
// defines it. The fast path and Python's slow path both call this one, so
// they agree to the last bit.
inline double half_sum_of_squares(const double *r, size_t count) noexcept {
    double sum = 0.0;
    for (size_t i = 0; i < count; ++i) sum += r[i] * r[i];
    return 0.5 * sum;
}

}  // namespace pybridge::detail
