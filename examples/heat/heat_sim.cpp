// The heat model behind pybridge's C++ API. Two modes:
//   pybridge-heat --synthesize ALPHA H Q0   print the 50 sensor readings and exit
//   pybridge-heat --measurements FILE       serve residuals (model - measurements) on $PYBRIDGE_CHANNEL
#include <pybridge/pybridge.hpp>

#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "heat_model.h"

namespace {

int synthesize(char **theta_text) {
    double theta[HEAT_N_PARAMS], readings[HEAT_N_READINGS];
    for (int i = 0; i < HEAT_N_PARAMS; ++i) theta[i] = std::strtod(theta_text[i], nullptr);
    const char *why = nullptr;
    if (heat_model_run(theta, readings, &why) != 0) {
        std::fprintf(stderr, "pybridge-heat: %s\n", why);
        return 2;
    }
    for (double reading : readings) std::printf("%.17g\n", reading);
    return 0;
}

int serve(const char *measurements_path) {
    double measured[HEAT_N_READINGS];
    if (heat_model_read_measurements(measurements_path, measured) != 0) {
        std::fprintf(stderr, "pybridge-heat: cannot read %d numbers from %s\n", HEAT_N_READINGS, measurements_path);
        return 2;
    }
    pybridge::Channel channel =
        pybridge::Channel::open({HEAT_N_PARAMS, HEAT_N_READINGS, PYBRIDGE_CAP_RESIDUALS});
    while (auto request = channel.wait()) {
        const pybridge::Span<double> residuals = request->residuals();
        const char *why = nullptr;
        if (heat_model_run(request->params().data(), residuals.data(), &why) != 0) {
            channel.reply_error(why);  // this evaluation failed; keep serving
            continue;
        }
        for (std::size_t i = 0; i < residuals.size(); ++i) residuals[i] -= measured[i];
        channel.reply_residuals();
    }
    return 0;
}

}  // namespace

int main(int argc, char **argv) {
    try {
        if (argc == 5 && std::strcmp(argv[1], "--synthesize") == 0) return synthesize(argv + 2);
        if (argc == 3 && std::strcmp(argv[1], "--measurements") == 0) return serve(argv[2]);
        std::fprintf(stderr, "usage: %s --synthesize ALPHA H Q0 | --measurements FILE\n", argv[0]);
        return 2;
    } catch (const pybridge::Error &error) {
        std::fprintf(stderr, "pybridge-heat: %s\n", error.what());
        return 1;
    }
}
