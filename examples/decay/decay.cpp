// A residual simulator for least_squares: the model y(t) = a exp(-b t) + c
// against 40 measurements of a decay with a = 2.5, b = 1.3, c = 0.5 taken at
// t = 0, 0.1, ..., 3.9. Residual i is model(t_i) - measured_i.
#include <pybridge/pybridge.hpp>

#include <cmath>
#include <cstdio>

namespace {
constexpr unsigned kReadings = 40;
double time_of(unsigned i) { return 0.1 * i; }
double measured(unsigned i) { return 2.5 * std::exp(-1.3 * time_of(i)) + 0.5; }
}  // namespace

int main() {
    try {
        pybridge::Channel channel = pybridge::Channel::open({3, kReadings, PYBRIDGE_CAP_RESIDUALS});
        while (auto request = channel.wait()) {
            const auto p = request->params();
            const auto residuals = request->residuals();
            for (unsigned i = 0; i < residuals.size(); ++i) {
                residuals[i] = p[0] * std::exp(-p[1] * time_of(i)) + p[2] - measured(i);
            }
            channel.reply_residuals();
        }
        return 0;
    } catch (const pybridge::Error &error) {
        std::fprintf(stderr, "pybridge-decay: %s\n", error.what());
        return 1;
    }
}
