// Fuzz target for pybridge_header_validate: whatever bytes a hostile or
// broken peer leaves in a segment, validation must neither read outside the
// mapping nor accept a header whose regions do not fit. Accepted headers are
// then used the way the shim uses them (every region read and written), so
// AddressSanitizer reports any region that is not really inside the buffer.
//
// With clang: -DPYBRIDGE_LIBFUZZER=ON builds a libFuzzer target. Otherwise
// main() below runs its own mutator:   fuzz_header [EXECUTIONS] [SEED]

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <vector>

#include "pybridge/pybridge.h"

namespace {
uint64_t accepted = 0;

void touch(unsigned char *segment, uint64_t offset, uint64_t count) {
    volatile unsigned char *bytes = segment + offset;
    for (uint64_t i = 0; i < count * sizeof(double); ++i) bytes[i] = static_cast<unsigned char>(bytes[i] + 1);
}
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    // An exact-size heap copy, so that ASan flags a read one byte too far.
    auto *segment = static_cast<unsigned char *>(std::malloc(size ? size : 1));
    if (size) std::memcpy(segment, data, size);
    char message[256];
    if (pybridge_header_validate(segment, size, message, sizeof message) == PYBRIDGE_OK) {
        ++accepted;
        pybridge_header h;
        std::memcpy(&h, segment, sizeof h);
        if (h.state == PYBRIDGE_STATE_READY) {
            const uint64_t batch = h.max_batch;
            touch(segment, h.params_offset, batch * h.n_params);
            if (h.capabilities & PYBRIDGE_CAP_GRADIENT) touch(segment, h.gradient_offset, batch * h.n_params);
            if (h.capabilities & PYBRIDGE_CAP_RESIDUALS) touch(segment, h.residuals_offset, batch * h.n_residuals);
            if (batch > 1) touch(segment, h.costs_offset, batch);
        }
    }
    std::free(segment);
    return 0;
}

#ifndef PYBRIDGE_LIBFUZZER
namespace {

struct Field {
    size_t offset, width;
};
// Every field a mutation may target, with the widths of protocol.h.
const Field kFields[] = {{0, 8},  {8, 4},  {12, 4}, {16, 8}, {24, 4}, {28, 4},  {32, 4},  {36, 4},  {40, 4},
                         {44, 4}, {48, 4}, {52, 4}, {56, 4}, {64, 8}, {72, 8},  {80, 8},  {88, 4},  {92, 4},
                         {96, 8}, {128, 8}, {136, 4}, {144, 4}, {192, 8}, {200, 4}, {208, 8}};

std::vector<uint8_t> valid_segment(std::mt19937_64 &random) {
    const uint32_t n_params = random() % 64, n_residuals = random() % 64, caps = random() % 4;
    const uint32_t max_batch = random() % 2 ? 1 : 1 + random() % 8;
    pybridge_layout layout;
    pybridge_layout_compute(n_params, (caps & PYBRIDGE_CAP_RESIDUALS) ? n_residuals : 0, caps, max_batch, &layout);
    std::vector<uint8_t> bytes(layout.segment_size + random() % 256);
    pybridge_header h{};
    h.magic = PYBRIDGE_MAGIC;
    h.version = PYBRIDGE_PROTOCOL_VERSION;
    h.header_size = sizeof h;
    h.segment_size = layout.segment_size;
    h.state = PYBRIDGE_STATE_READY;
    h.n_params = n_params;
    h.n_residuals = (caps & PYBRIDGE_CAP_RESIDUALS) ? n_residuals : 0;
    h.capabilities = caps;
    h.params_offset = layout.params_offset;
    h.gradient_offset = layout.gradient_offset;
    h.residuals_offset = layout.residuals_offset;
    h.max_batch = max_batch;
    h.costs_offset = layout.costs_offset;
    std::memcpy(bytes.data(), &h, sizeof h);
    return bytes;
}

uint64_t interesting(std::mt19937_64 &random, uint64_t size) {
    const uint64_t values[] = {0, 1, 2, 3, 4, 5, 7, 8, 63, 64, 1023, 1024, 1025, size - 8, size - 1, size, size + 1,
                               0x7fffffffULL, 0x80000000ULL, 0xffffffffULL, 1ULL << 32, 1ULL << 61, 1ULL << 63,
                               ~0ULL, ~0ULL - 7};
    return random() % 3 == 0 ? random() : values[random() % (sizeof values / sizeof values[0])];
}

void mutate(std::vector<uint8_t> &bytes, std::mt19937_64 &random) {
    const int mutations = 1 + random() % 4;
    for (int m = 0; m < mutations; ++m) {
        switch (random() % 4) {
            case 0:
            case 1: {  // a header field set to a boundary value
                const Field field = kFields[random() % (sizeof kFields / sizeof kFields[0])];
                const uint64_t value = interesting(random, bytes.size());
                if (field.offset + field.width <= bytes.size()) std::memcpy(&bytes[field.offset], &value, field.width);
                break;
            }
            case 2:  // a flipped bit anywhere in the header
                if (!bytes.empty()) bytes[random() % std::min<size_t>(bytes.size(), 1024)] ^= 1u << (random() % 8);
                break;
            default:  // the mapping shorter or longer than the header says
                bytes.resize(random() % 2 ? random() % (bytes.size() + 1) : bytes.size() + random() % 4096);
        }
    }
}

}  // namespace

int main(int argc, char **argv) {
    const uint64_t executions = argc > 1 ? std::strtoull(argv[1], nullptr, 10) : 1000000;
    const uint64_t seed = argc > 2 ? std::strtoull(argv[2], nullptr, 10) : 1;
    std::mt19937_64 random(seed);
    const auto started = std::chrono::steady_clock::now();
    for (uint64_t i = 0; i < executions; ++i) {
        std::vector<uint8_t> bytes = valid_segment(random);
        if (i % 16 != 0) mutate(bytes, random);  // keep some valid inputs in the mix
        LLVMFuzzerTestOneInput(bytes.data(), bytes.size());
    }
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
    std::printf("fuzz_header: %llu executions in %.2f s (%.0f/s), %llu accepted, %llu rejected, 0 crashes\n",
                static_cast<unsigned long long>(executions), seconds, executions / seconds,
                static_cast<unsigned long long>(accepted), static_cast<unsigned long long>(executions - accepted));
    return accepted == 0 || accepted == executions ? 1 : 0;  // both paths must have been exercised
}
#endif
