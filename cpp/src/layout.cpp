// Where the regions of a segment go, and the check every peer runs on a
// header before trusting a single offset in it.

#include <algorithm>
#include <cstdarg>
#include <cstddef>
#include <cstdio>
#include <cstring>

#include "pybridge/pybridge.h"

// The offsets below are the wire format: docs/protocol.md and the Python
// mirror are checked against them, so a change here must be deliberate.
static_assert(sizeof(pybridge_header) == 1024, "pybridge_header must stay 1024 bytes");
static_assert(offsetof(pybridge_header, declared_n_params) == 36, "declaration block moved");
static_assert(offsetof(pybridge_header, n_params) == 48, "layout block moved");
static_assert(offsetof(pybridge_header, declared_max_batch) == 88, "batch block moved");
static_assert(offsetof(pybridge_header, request_count) == 144, "request count moved");
static_assert(offsetof(pybridge_header, request_seq) == 128, "request line must start a cache line");
static_assert(offsetof(pybridge_header, reply_seq) == 192, "reply line must start a cache line");
static_assert(offsetof(pybridge_header, request_flags) == 148, "request flags moved");
static_assert(offsetof(pybridge_header, picked_at_ns) == 216, "reply stamps moved");
static_assert(offsetof(pybridge_header, replied_at_ns) == 224, "reply stamps moved");
static_assert(offsetof(pybridge_header, reply_semaphore) == 256, "reply semaphore name moved");
static_assert(offsetof(pybridge_header, doorbell) == 320, "doorbell name moved");
static_assert(offsetof(pybridge_header, error) == 384, "error text moved");

namespace {

constexpr uint64_t align_up(uint64_t value) {
    return (value + PYBRIDGE_REGION_ALIGN - 1) / PYBRIDGE_REGION_ALIGN * PYBRIDGE_REGION_ALIGN;
}

void write_message(char *message, size_t size, const char *format, ...) __attribute__((format(printf, 3, 4)));

void write_message(char *message, size_t size, const char *format, ...) {
    if (message == nullptr || size == 0) return;
    va_list args;
    va_start(args, format);
    std::vsnprintf(message, size, format, args);
    va_end(args);
}

}  // namespace

extern "C" int pybridge_layout_compute(uint32_t n_params, uint32_t n_residuals, uint32_t capabilities,
                                       uint32_t max_batch, pybridge_layout *out) {
    if (out == nullptr || (capabilities & ~PYBRIDGE_CAP_ALL) != 0) return PYBRIDGE_E_INVALID_ARGUMENT;
    if (n_residuals != 0 && (capabilities & PYBRIDGE_CAP_RESIDUALS) == 0) return PYBRIDGE_E_INVALID_ARGUMENT;
    const uint64_t batch = max_batch == 0 ? 1 : max_batch;
    // Each region is at most 2^32 * 2^32 * 8 bytes: bound the product before it can wrap, so that
    // a hostile header cannot pass validation with offsets that overflowed.
    constexpr uint64_t limit = uint64_t{1} << 60;
    const uint64_t widest = std::max(n_params, n_residuals);
    if (widest != 0 && batch > limit / sizeof(double) / widest) return PYBRIDGE_E_INVALID_ARGUMENT;
    const uint64_t vector_bytes = batch * n_params * sizeof(double);
    uint64_t end = align_up(sizeof(pybridge_header));
    out->params_offset = end;
    end = align_up(end + vector_bytes);
    out->gradient_offset = 0;
    if (capabilities & PYBRIDGE_CAP_GRADIENT) {
        out->gradient_offset = end;
        end = align_up(end + vector_bytes);
    }
    out->residuals_offset = 0;
    if (capabilities & PYBRIDGE_CAP_RESIDUALS) {
        out->residuals_offset = end;
        end = align_up(end + batch * n_residuals * sizeof(double));
    }
    out->costs_offset = 0;
    if (batch > 1) {
        out->costs_offset = end;
        end = align_up(end + batch * sizeof(double));
    }
    out->segment_size = end;
    return PYBRIDGE_OK;
}

extern "C" int pybridge_header_validate(const void *segment, uint64_t mapped_size, char *message,
                                        size_t message_size) {
    if (segment == nullptr || mapped_size < sizeof(pybridge_header)) {
        write_message(message, message_size,
                      "segment of %llu bytes is smaller than a pybridge header (%zu bytes)",
                      static_cast<unsigned long long>(mapped_size), sizeof(pybridge_header));
        return PYBRIDGE_E_PROTOCOL;
    }
    // Copy first: the peer may be writing, and every check must see one snapshot.
    pybridge_header h;
    std::memcpy(&h, segment, sizeof h);
    if (h.magic != PYBRIDGE_MAGIC) {
        write_message(message, message_size, "not a pybridge channel (magic 0x%016llx, expected 0x%016llx)",
                      static_cast<unsigned long long>(h.magic), static_cast<unsigned long long>(PYBRIDGE_MAGIC));
        return PYBRIDGE_E_PROTOCOL;
    }
    if (h.version != PYBRIDGE_PROTOCOL_VERSION) {
        write_message(message, message_size,
                      "protocol version mismatch: the channel speaks version %u, this shim speaks version %u; "
                      "rebuild the simulator against the pybridge that the driver uses",
                      h.version, PYBRIDGE_PROTOCOL_VERSION);
        return PYBRIDGE_E_PROTOCOL;
    }
    if (h.header_size != sizeof(pybridge_header)) {
        write_message(message, message_size, "header size %u, expected %zu", h.header_size, sizeof(pybridge_header));
        return PYBRIDGE_E_PROTOCOL;
    }
    if (h.segment_size < sizeof(pybridge_header) || h.segment_size > mapped_size) {
        write_message(message, message_size, "header claims a %llu-byte segment but %llu bytes are mapped",
                      static_cast<unsigned long long>(h.segment_size), static_cast<unsigned long long>(mapped_size));
        return PYBRIDGE_E_PROTOCOL;
    }
    if (std::memchr(h.reply_semaphore, '\0', sizeof h.reply_semaphore) == nullptr ||
        std::memchr(h.doorbell, '\0', sizeof h.doorbell) == nullptr) {
        write_message(message, message_size, "a semaphore name is not NUL-terminated");
        return PYBRIDGE_E_PROTOCOL;
    }
    if (h.state < PYBRIDGE_STATE_CREATED || h.state > PYBRIDGE_STATE_CLOSED) {
        write_message(message, message_size, "unknown channel state %u", h.state);
        return PYBRIDGE_E_PROTOCOL;
    }
    if (h.state != PYBRIDGE_STATE_READY) return PYBRIDGE_OK;  // no layout to check yet

    pybridge_layout expected;
    if (h.max_batch == 0 ||
        pybridge_layout_compute(h.n_params, h.n_residuals, h.capabilities, h.max_batch, &expected) != PYBRIDGE_OK) {
        write_message(message, message_size,
                      "invalid shape: %u parameters, %u residuals, capabilities 0x%x, batches of %u",
                      h.n_params, h.n_residuals, h.capabilities, h.max_batch);
        return PYBRIDGE_E_PROTOCOL;
    }
    if (h.params_offset != expected.params_offset || h.gradient_offset != expected.gradient_offset ||
        h.residuals_offset != expected.residuals_offset || h.costs_offset != expected.costs_offset) {
        write_message(message, message_size, "region offsets do not match the layout for this shape");
        return PYBRIDGE_E_PROTOCOL;
    }
    if (expected.segment_size > h.segment_size) {
        write_message(message, message_size, "regions need %llu bytes but the segment has %llu",
                      static_cast<unsigned long long>(expected.segment_size),
                      static_cast<unsigned long long>(h.segment_size));
        return PYBRIDGE_E_PROTOCOL;
    }
    return PYBRIDGE_OK;
}
