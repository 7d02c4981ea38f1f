// The n-dimensional Rosenbrock function with its analytic gradient. It
// declares no dimension: the driver chooses n (Simulator(..., n_params=n)).
//   f(x) = sum_{i<n-1} 100 (x[i+1] - x[i]^2)^2 + (1 - x[i])^2,   minimum f(1, ..., 1) = 0
#include <pybridge/pybridge.hpp>

#include <cstdio>

int main() {
    try {
        pybridge::Channel channel = pybridge::Channel::open({0, 0, PYBRIDGE_CAP_GRADIENT});
        while (auto request = channel.wait()) {
            const auto x = request->params();
            const auto gradient = request->gradient();  // empty unless asked for
            const std::size_t n = x.size();
            for (double &g : gradient) g = 0.0;
            double cost = 0.0;
            for (std::size_t i = 0; i + 1 < n; ++i) {
                const double a = x[i + 1] - x[i] * x[i], b = 1.0 - x[i];
                cost += 100.0 * a * a + b * b;
                if (!gradient.empty()) {
                    gradient[i] += -400.0 * a * x[i] - 2.0 * b;
                    gradient[i + 1] += 200.0 * a;
                }
            }
            channel.reply(cost);
        }
        return 0;
    } catch (const pybridge::Error &error) {
        std::fprintf(stderr, "pybridge-rosenbrock: %s\n", error.what());
        return 1;
    }
}
