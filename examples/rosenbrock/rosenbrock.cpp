// The n-dimensional Rosenbrock function with its analytic gradient. It
// declares no dimension: the driver chooses n (Simulator(..., n_params=n)).
//   f(x) = sum_{i<n-1} 100 (x[i+1] - x[i]^2)^2 + (1 - x[i])^2,   minimum f(1, ..., 1) = 0
//
// With `--batch K` it declares that one request may carry up to K parameter
// vectors, as a vectorised or GPU code would: the driver then packs requests
// (Simulator.vectorized, Pool.map). The loop below serves either way.
#include <pybridge/pybridge.hpp>

#include <cstdio>
#include <cstdlib>
#include <cstring>

namespace {

double rosenbrock(pybridge::Span<const double> x, pybridge::Span<double> gradient) {
    const std::size_t n = x.size();
    for (double &g : gradient) g = 0.0;  // empty unless a gradient was asked for
    double cost = 0.0;
    for (std::size_t i = 0; i + 1 < n; ++i) {
        const double a = x[i + 1] - x[i] * x[i], b = 1.0 - x[i];
        cost += 100.0 * a * a + b * b;
        if (!gradient.empty()) {
            gradient[i] += -400.0 * a * x[i] - 2.0 * b;
            gradient[i + 1] += 200.0 * a;
        }
    }
    return cost;
}

}  // namespace

int main(int argc, char **argv) {
    uint32_t max_batch = 0;  // one vector per request
    if (argc == 3 && std::strcmp(argv[1], "--batch") == 0) {
        max_batch = static_cast<uint32_t>(std::strtoul(argv[2], nullptr, 10));
    } else if (argc != 1) {
        std::fprintf(stderr, "usage: pybridge-rosenbrock [--batch K]\n");
        return 2;
    }
    try {
        pybridge::Channel channel = pybridge::Channel::open({0, 0, PYBRIDGE_CAP_GRADIENT, max_batch});
        while (auto request = channel.wait()) {
            for (std::size_t k = 0; k < request->count(); ++k) {
                request->costs()[k] = rosenbrock(request->params(k), request->gradient(k));
            }
            channel.reply_batch();
        }
        return 0;
    } catch (const pybridge::Error &error) {
        std::fprintf(stderr, "pybridge-rosenbrock: %s\n", error.what());
        return 1;
    }
}
