// The benchmark's pybridge simulator: sum-of-squares or Rosenbrock (with
// gradient), any dimension, optionally sleeping or computing (burning CPU)
// for a fixed time per evaluation, or computing for x[0] microseconds (--burn-x0: the driver sets
// each evaluation's model time, for jitter and abrupt changes; the cost is then the model's wall time
// in microseconds, which the driver subtracts from the round trip); with --batch K, up to K vectors per request.
//   pybridge-bench-sim [--rosenbrock] [--sleep-us N] [--burn-us N] [--burn-x0] [--batch K]
#include <pybridge/pybridge.hpp>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <thread>

#include "cost.h"

// Busy for `us` microseconds of this thread's CPU time: a model that computes, so that two of them
// on two cores are really limited by the cores (a sleep would overlap on any number of them).
static void burn(long us) {
    timespec now{};
    ::clock_gettime(CLOCK_THREAD_CPUTIME_ID, &now);
    const long long end = now.tv_sec * 1000000000LL + now.tv_nsec + us * 1000LL;
    volatile double sink = 0.0;
    do {
        for (int i = 0; i < 1000; ++i) sink = sink + 1e-9;
        ::clock_gettime(CLOCK_THREAD_CPUTIME_ID, &now);
    } while (now.tv_sec * 1000000000LL + now.tv_nsec < end);
}

int main(int argc, char **argv) {
    bool rosenbrock = false, burn_x0 = false;
    long sleep_us = 0, burn_us = 0;
    uint32_t max_batch = 0;
    for (int i = 1; i < argc; ++i) {
        if (std::strcmp(argv[i], "--rosenbrock") == 0) rosenbrock = true;
        if (std::strcmp(argv[i], "--sleep-us") == 0 && i + 1 < argc) sleep_us = std::atol(argv[++i]);
        if (std::strcmp(argv[i], "--burn-us") == 0 && i + 1 < argc) burn_us = std::atol(argv[++i]);
        if (std::strcmp(argv[i], "--burn-x0") == 0) burn_x0 = true;
        if (std::strcmp(argv[i], "--batch") == 0 && i + 1 < argc) max_batch = std::atol(argv[++i]);
    }
    try {
        auto channel = pybridge::Channel::open({0, 0, rosenbrock ? PYBRIDGE_CAP_GRADIENT : 0u, max_batch});
        while (auto request = channel.wait()) {
            for (std::size_t k = 0; k < request->count(); ++k) {
                if (sleep_us > 0) std::this_thread::sleep_for(std::chrono::microseconds(sleep_us));
                if (burn_us > 0) burn(burn_us);
                const auto x = request->params(k);
                if (burn_x0) {  // the cost is the model's own wall time in us: what the driver subtracts
                    const auto started = std::chrono::steady_clock::now();
                    if (!x.empty() && x[0] > 0) burn(static_cast<long>(x[0]));
                    request->costs()[k] = std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - started).count();
                    continue;
                }
                request->costs()[k] = rosenbrock ? bench_rosenbrock(x.data(), x.size(), request->gradient(k).data())
                                                 : bench_sum_squares(x.data(), x.size());
            }
            channel.reply_batch();
        }
        return 0;
    } catch (const pybridge::Error &error) {
        std::fprintf(stderr, "pybridge-bench-sim: %s\n", error.what());
        return 1;
    }
}
