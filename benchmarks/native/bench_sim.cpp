// The benchmark's pybridge simulator: sum-of-squares or Rosenbrock (with
// gradient), any dimension, optionally sleeping per evaluation.
//   pybridge-bench-sim [--rosenbrock] [--sleep-us N]
#include <pybridge/pybridge.hpp>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <thread>

#include "cost.h"

int main(int argc, char **argv) {
    bool rosenbrock = false;
    long sleep_us = 0;
    for (int i = 1; i < argc; ++i) {
        if (std::strcmp(argv[i], "--rosenbrock") == 0) rosenbrock = true;
        if (std::strcmp(argv[i], "--sleep-us") == 0 && i + 1 < argc) sleep_us = std::atol(argv[++i]);
    }
    try {
        auto channel = pybridge::Channel::open({0, 0, rosenbrock ? PYBRIDGE_CAP_GRADIENT : 0u});
        while (auto request = channel.wait()) {
            if (sleep_us > 0) std::this_thread::sleep_for(std::chrono::microseconds(sleep_us));
            const auto x = request->params();
            const double cost = rosenbrock ? bench_rosenbrock(x.data(), x.size(), request->gradient().data())
                                           : bench_sum_squares(x.data(), x.size());
            channel.reply(cost);
        }
        return 0;
    } catch (const pybridge::Error &error) {
        std::fprintf(stderr, "pybridge-bench-sim: %s\n", error.what());
        return 1;
    }
}
